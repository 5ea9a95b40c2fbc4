"""Where the project's playbooks, inventories and ansible.cfg live."""

from __future__ import annotations

import os
from pathlib import Path


class ProjectError(Exception):
    """One line naming what to fix."""


def project_root() -> Path:
    """KVTESTBED_HOME, else the checkout this package was installed from, else the working directory."""
    candidates = []
    if os.environ.get("KVTESTBED_HOME"):
        candidates.append(Path(os.environ["KVTESTBED_HOME"]))
    candidates += [Path(__file__).resolve().parents[2], Path.cwd()]
    for candidate in candidates:
        if (candidate / "ansible.cfg").is_file() and (candidate / "playbooks").is_dir():
            return candidate
    raise ProjectError("cannot find the kvtestbed checkout (ansible.cfg + playbooks/); set KVTESTBED_HOME")


def resolve_inventory(root: Path, inventory: str) -> Path:
    path = Path(inventory)
    if not path.is_absolute() and not path.exists():
        path = root / inventory
    if not path.exists():
        raise ProjectError(f"inventory {inventory} does not exist (try inventory/lab or your own copy of "
                           "inventory/example-hardware)")
    return path.resolve()


def ansible_bin(name: str) -> str:
    """The Ansible command installed beside this Python (a venv need not be activated), else PATH's."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)
