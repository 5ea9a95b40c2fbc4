"""Which Ansible strategy `kvtestbed deploy` runs the playbooks with.

Mitogen's `mitogen_linear` by default: the same task order as Ansible's `linear`, but one persistent Python per
host instead of a fresh interpreter per task. Measured on the 2-core machine (2026-12-02, the 5-host default lab,
`ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks kvtestbed deploy`): with ansible-core 2.19 a module run
costs ~0.3 CPU-s on the host (`python3 AnsiballZ_stat.py`: 0.2 s of it importing module_utils from the zip), so a
~1,000-module deploy was CPU-bound on the hosts. First deploy of a fresh lab 520 s -> 347 s; an unchanged converge
(`--force`) 205 s; 20 `stat`s on 5 hosts 32.5 -> 11.4 CPU-s. Ansible's own strategy stays one flag away
(`--strategy linear`), and `ansible-playbook` run by hand or by Molecule uses it, so both paths stay exercised.

Hosts with `ansible_connection: local` get Ansible's own strategy unless Mitogen is asked for by name: Mitogen
does not know the local user and wraps `become` in sudo even when that user is already root (a machine without
sudo then fails at its first task), where Ansible's local connection skips it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

STRATEGIES = ("mitogen_linear", "linear")
DEFAULT = "mitogen_linear"


class StrategyError(Exception):
    """The strategy cannot be used here (one line for the user)."""


def mitogen_strategy_dir() -> Path | None:
    """Where the installed ansible_mitogen keeps its strategy plugins; None when it is not installed."""
    try:
        import ansible_mitogen
    except ImportError:
        return None
    return Path(ansible_mitogen.__file__).resolve().parent / "plugins" / "strategy"


def choose(requested: str | None, connections: Iterable[str]) -> tuple[str, str | None]:
    """The strategy to run (`requested`, else the default) and, when the default gave way, why (one line).
    `connections` are the inventory hosts' `ansible_connection` values."""
    if requested is not None:
        return requested, None
    if any(str(c).strip().lower() == "local" for c in connections):
        return "linear", ("deploy: Ansible's linear strategy: the inventory has ansible_connection: local hosts "
                          "(Mitogen would wrap become in sudo there); --strategy mitogen_linear to insist")
    return DEFAULT, None


def strategy_env(strategy: str) -> dict[str, str]:
    """The environment ansible-playbook needs to run with `strategy`."""
    if strategy not in STRATEGIES:
        raise StrategyError(f"strategy {strategy!r}: not one of {', '.join(STRATEGIES)}")
    if strategy == "linear":
        return {"ANSIBLE_STRATEGY": "linear"}
    plugins = mitogen_strategy_dir()
    if plugins is None or not (plugins / f"{strategy}.py").is_file():
        raise StrategyError(f"strategy {strategy}: Mitogen is not installed in this venv (make install), "
                            "or deploy with --strategy linear")
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": strategy}
