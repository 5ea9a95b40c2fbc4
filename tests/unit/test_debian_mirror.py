"""The lab takes its Debian mirror from the controller's own apt sources, in either format."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kvtestbed.lab import debian_mirror as mirror
from tests.support.binaries import unavailable

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, name: str, text: str) -> None:
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def test_deb822(tmp_path):
    write(tmp_path, "sources.list.d/debian.sources",
          "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
          "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    assert mirror.find_mirror("archive", str(tmp_path)) == "http://mirror.example/debian"
    assert mirror.find_mirror("security", str(tmp_path)) == "http://mirror.example/debian-security"


def test_one_line_with_options_and_comments(tmp_path):
    write(tmp_path, "sources.list",
          "# deb http://old.example/debian bookworm main\n"
          "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://local.example/debian/ bookworm main\n"
          "deb http://local.example/debian-security bookworm-security main\n")
    assert mirror.find_mirror("archive", str(tmp_path)) == "http://local.example/debian"
    assert mirror.find_mirror("security", str(tmp_path)) == "http://local.example/debian-security"


def test_disabled_and_foreign_sources_are_ignored(tmp_path):
    write(tmp_path, "sources.list.d/a.sources",
          "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n")
    write(tmp_path, "sources.list.d/b.list", "deb https://packages.example/apt stable main\n")
    assert mirror.find_mirror("archive", str(tmp_path)) is None
    assert mirror.main(["--apt-dir", str(tmp_path)]) == 2


def test_runs_as_a_script_with_the_system_python(tmp_path):
    """tools/install-deps.sh runs it before the venv exists: the system python3, the standard library only."""
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        unavailable("no system python3")
    write(tmp_path, "sources.list", "deb http://local.example/debian bookworm main\n")
    # as install-deps.sh runs it: no venv, no PYTHONPATH, the script's own directory first on sys.path
    env = {"PATH": "/usr/bin:/bin"}
    script = str(ROOT / "src/kvtestbed/lab/debian_mirror.py")
    proc = subprocess.run([system_python, script, "--apt-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=30, env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "http://local.example/debian\n", "")
    missing = subprocess.run([system_python, script, "--apt-dir", str(tmp_path / "none")], capture_output=True,
                             text=True, timeout=30, env=env)
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1, missing.stderr
