"""The lab takes its Debian mirror from the controller's own apt sources, in either format."""

from __future__ import annotations

from pathlib import Path

from tests.support.repo_modules import load_module

mirror = load_module("roles/lab/module_utils/lab_debian_mirror.py", "lab_debian_mirror")


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
