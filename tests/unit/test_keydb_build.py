"""roles/kvstore/files/keydb_build.py without compiling: its bad-input lines, and reuse of a matching bundle."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "kvstore" / "files" / "keydb_build.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)


def test_probe_names_this_machine() -> None:
    out = json.loads(_run("probe").stdout)
    assert out["arch"] == platform.machine() and isinstance(out["tools"], bool) and out["release"]


def test_missing_archive_is_one_line_exit_2(tmp_path: Path) -> None:
    result = _run("build", "--archive", str(tmp_path / "nope.tar.gz"), "--version", "6.3.4", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "nope.tar.gz: no such file" in result.stderr


def test_wrong_checksum_is_refused_before_building(tmp_path: Path) -> None:
    archive = tmp_path / "KeyDB-6.3.4.tar.gz"
    archive.write_bytes(b"not keydb")
    result = _run("build", "--archive", str(archive), "--version", "6.3.4", "--out", str(tmp_path / "out"),
                  "--sha256", "0" * 64)
    assert result.returncode == 2 and "has sha256" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "out").glob("*.tar.gz"))


def test_a_bundle_built_from_the_same_archive_and_arguments_is_reused(tmp_path: Path) -> None:
    archive = tmp_path / "KeyDB-6.3.4.tar.gz"
    archive.write_bytes(b"stand-in archive: never unpacked when the bundle is reused")
    out = tmp_path / "cache"
    out.mkdir()
    name = json.loads(_run("probe").stdout)
    name = f"keydb-6.3.4-{name['release']}-{name['arch']}"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "keydb-server").write_text("#!/bin/sh\n")
    with tarfile.open(out / f"{name}.tar.gz", "w:gz") as bundle:
        bundle.add(tmp_path / "bin", arcname="bin")
    manifest = {"version": "6.3.4", "archive_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(), "make_args": []}
    (out / f"{name}.json").write_text(json.dumps(manifest))

    reused = _run("build", "--archive", str(archive), "--version", "6.3.4", "--out", str(out))
    assert reused.returncode == 0, reused.stderr
    assert json.loads(reused.stdout)["changed"] is False
    assert (out / name / "bin" / "keydb-server").is_file()  # unpacked beside the bundle for the tests

    # another make argument is another build: the reuse check must not answer yes (the stand-in then fails to unpack)
    rebuilt = _run("build", "--archive", str(archive), "--version", "6.3.4", "--out", str(out), "--make-arg", "X=1")
    assert rebuilt.returncode == 1 and "unpacking failed" in rebuilt.stderr
