"""The base image: named by its recipe, built once per recipe even when labs start side by side, and a
killed build's leftovers removed without touching a build that still runs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kvtestbed.lab import image
from kvtestbed.lab.runtime import LabError

RECIPE = image.Recipe("bookworm", "http://mirror.example/debian", "", ["systemd", "openssh-server"], "true\n")


def test_the_recipe_names_the_image():
    same = image.Recipe("bookworm", "http://mirror.example/debian", "", ["openssh-server", "systemd"], "true\n")
    assert RECIPE.id() == same.id()  # package order does not matter
    other = image.Recipe("bookworm", "http://mirror.example/debian", "", ["systemd"], "true\n")
    assert RECIPE.id() != other.id()
    assert len(RECIPE.id()) == 12


def test_pem_blocks():
    block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert image.pem_blocks("junk\n" + block + "more junk\n" + block) == [block, block]


def test_no_mirror_is_one_line(monkeypatch):
    monkeypatch.setattr(image, "find_mirror", lambda kind: None)
    with pytest.raises(LabError, match="^no Debian mirror in this controller's apt sources; set lab_image_mirror$"):
        image.resolve_mirrors("auto", "auto")


def test_a_missing_trust_bundle_is_one_line(tmp_path):
    with pytest.raises(LabError, match=r"^lab_image_trust_bundle .*/none: No such file or directory$"):
        image.read_trust_bundle(str(tmp_path / "none"))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_build_go_and_a_running_build_stays(tmp_path, monkeypatch):
    built: list[str] = []
    monkeypatch.setattr(image, "build", lambda target, recipe: (built.append(target), Path(target).mkdir()))
    killed = tmp_path / f"bookworm-0123456789ab.build-{dead_pid()}"
    running = tmp_path / "bookworm-ba9876543210.build-1"  # pid 1 runs: another lab's build in progress
    for path in (killed, running):
        (path / "etc").mkdir(parents=True)
    result = image.ensure_image(str(tmp_path), RECIPE)
    assert (result.changed, result.path, built) == (True, f"{tmp_path}/bookworm-{RECIPE.id()}", [result.path])
    assert not killed.exists() and running.exists()
    again = image.ensure_image(str(tmp_path), RECIPE)
    assert (again.changed, again.path, built) == (False, result.path, [result.path])


def test_labs_starting_side_by_side_build_once(tmp_path, monkeypatch):
    builds: list[str] = []
    all_in = threading.Barrier(4)

    def build(target: str, recipe: image.Recipe) -> None:
        builds.append(target)
        Path(target).mkdir()

    monkeypatch.setattr(image, "build", build)

    def lab(_: int) -> bool:
        all_in.wait(timeout=30)
        return image.ensure_image(str(tmp_path), RECIPE).changed

    with ThreadPoolExecutor(4) as pool:
        changed = list(pool.map(lab, range(4)))
    assert len(builds) == 1 and sorted(changed) == [False, False, False, True]


def test_a_foreign_architecture_is_an_image_of_its_own_and_the_native_id_stays():
    arm = image.Recipe(RECIPE.suite, RECIPE.mirror, "", RECIPE.packages, RECIPE.setup, arch="arm64")
    native = image.Recipe(RECIPE.suite, RECIPE.mirror, "", RECIPE.packages, RECIPE.setup)
    # the id of a native recipe is what it was before architectures existed: cached images stay valid
    before = json.dumps({"suite": "bookworm", "mirror": RECIPE.mirror, "security": "", "setup": "true\n", "trust": "",
                         "packages": sorted(RECIPE.packages)}, sort_keys=True)
    assert native.id() == hashlib.sha256(before.encode()).hexdigest()[:12]
    assert arm.id() != native.id()
    assert (arm.name, native.name) == ("bookworm-arm64", "bookworm")
    base = "/cache/bookworm"
    assert image._same_kind(base, f"{base}-{native.id()}")
    assert not image._same_kind(base, f"/cache/bookworm-arm64-{arm.id()}")  # never collected as an old native one
    assert not image._same_kind(base, f"{base}-{native.id()}.lock")
    assert image._same_kind("/cache/bookworm-arm64", f"/cache/bookworm-arm64-{arm.id()}")


@pytest.mark.parametrize(("entry", "ok"), [
    ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n", True),
    ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: P\n", False),  # no F: not in containers
    ("disabled\nflags: PF\n", False),
    (None, False),  # qemu-user-static not installed
])
def test_emulation_is_checked_before_a_foreign_image_is_built(tmp_path, entry, ok):
    if entry is not None:
        (tmp_path / "qemu-aarch64").write_text(entry)
    if ok:
        image.check_emulation("arm64", str(tmp_path))
        return
    with pytest.raises(LabError, match=r"^arm64 lab hosts need QEMU user emulation: apt install qemu-user-static "
                                       r"binfmt-support \(then .*/qemu-aarch64 must say enabled, flags with F\)$"):
        image.check_emulation("arm64", str(tmp_path))
