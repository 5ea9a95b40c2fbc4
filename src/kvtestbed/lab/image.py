"""The lab's Debian base image: built with debootstrap once, and again only when its recipe changes."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from kvtestbed.lab.debian_mirror import find_mirror
from kvtestbed.lab.runtime import LabError, pid_alive, remove_tree, run, unmount_below

PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
PEM_END = "-----END CERTIFICATE-----"
# debootstrap fetches ~100 packages and the setup script runs apt: minutes on a slow mirror, never an hour
BOOTSTRAP_TIMEOUT = 1800.0
SETUP_TIMEOUT = 1800.0


@dataclass
class Recipe:
    """Everything that makes an image: a change in any of it is a new image."""

    suite: str
    mirror: str
    security_mirror: str
    packages: list[str]
    setup: str
    trust: str = ""  # the controller's CA bundle text, or empty
    arch: str = ""  # a Debian architecture other than the controller's (run under QEMU user emulation), or ""

    def id(self) -> str:
        fields = {"suite": self.suite, "mirror": self.mirror, "security": self.security_mirror,
                  "packages": sorted(self.packages), "setup": self.setup,
                  "trust": hashlib.sha256(self.trust.encode()).hexdigest() if self.trust else ""}
        if self.arch:  # only then: the controller's own image keeps the id (and the cache) it had
            fields["arch"] = self.arch
        recipe = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(recipe.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        """The image's directory name without its id: the suite, and the architecture when foreign."""
        return f"{self.suite}-{self.arch}" if self.arch else self.suite


@dataclass
class ImageResult:
    path: str
    id: str
    changed: bool
    build_seconds: float = 0.0
    mirrors: dict[str, str] = field(default_factory=dict)


# Debian architecture -> the QEMU user emulator binfmt_misc registers for it (Debian's qemu-user-static)
QEMU_NAMES = {"arm64": "aarch64", "armhf": "arm", "amd64": "x86_64"}
BINFMT_DIR = "/proc/sys/fs/binfmt_misc"


def native_arch() -> str:
    """The controller's Debian architecture (dpkg's name: amd64, arm64, armhf)."""
    _, out, _ = run(["dpkg", "--print-architecture"])
    return out.strip()


def foreign_arch(arch: str) -> str:
    """"" for the controller's own architecture (or none given), else the architecture, checked."""
    if not arch or arch == native_arch():
        return ""
    if arch not in QEMU_NAMES:
        raise LabError(f"lab image architecture {arch!r}: use one of {', '.join(sorted(QEMU_NAMES))}")
    return arch


def check_emulation(arch: str, binfmt_dir: str = BINFMT_DIR) -> None:
    """A foreign architecture's binaries must run here, in containers too: QEMU registered with binfmt_misc's F
    flag (the interpreter opened once, at registration, so a container's root need not hold it)."""
    entry = os.path.join(binfmt_dir, f"qemu-{QEMU_NAMES[arch]}")
    try:
        with open(entry) as handle:
            text = handle.read()
    except OSError:
        text = ""
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    if not text.startswith("enabled") or "F" not in flags:
        raise LabError(f"{arch} lab hosts need QEMU user emulation: apt install qemu-user-static binfmt-support "
                       f"(then {entry} must say enabled, flags with F)")


def resolve_mirrors(mirror: str, security_mirror: str) -> tuple[str, str]:
    """"auto" means the mirror this controller's apt already uses; the archive one must exist."""
    if mirror == "auto":
        mirror = find_mirror("archive") or ""
    if security_mirror == "auto":
        security_mirror = find_mirror("security") or ""
    if not mirror:
        raise LabError("no Debian mirror in this controller's apt sources; set lab_image_mirror")
    return mirror, security_mirror


def read_trust_bundle(path: str) -> str:
    if not path:
        return ""
    try:
        with open(path) as handle:
            return handle.read()
    except OSError as exc:
        raise LabError(f"lab_image_trust_bundle {path}: {exc.strerror}") from None


def pem_blocks(text: str) -> list[str]:
    blocks = []
    for chunk in text.split(PEM_END)[:-1]:
        start = chunk.find(PEM_BEGIN)
        if start >= 0:
            blocks.append(chunk[start:].strip() + "\n" + PEM_END + "\n")
    return blocks


def add_controller_trust(root: str, bundle_text: str) -> int:
    """Trust in the image what the controller trusts beyond Debian's own list (proxies, company CAs)."""
    with open(os.path.join(root, "etc/ssl/certs/ca-certificates.crt")) as handle:
        known = {block.strip() for block in pem_blocks(handle.read())}
    extra = [block for block in pem_blocks(bundle_text) if block.strip() not in known]
    target = os.path.join(root, "usr/local/share/ca-certificates")
    os.makedirs(target, exist_ok=True)
    for index, block in enumerate(extra):
        with open(os.path.join(target, f"kvtestbed-controller-{index}.crt"), "w") as handle:
            handle.write(block)
    if extra:
        run(["chroot", root, "update-ca-certificates"])
    return len(extra)


def _in_use(path: str) -> bool:
    """True while a host's overlay root is stacked on the image."""
    needle = f"lowerdir={os.path.realpath(path)}"
    with open("/proc/self/mountinfo") as handle:
        return any(needle in line for line in handle)


def discard(path: str) -> None:
    # a killed debootstrap leaves /proc and /sys of the host mounted inside: never delete through them
    unmount_below(path)
    remove_tree(path)


def build(target: str, recipe: Recipe) -> None:
    """debootstrap into a staging directory, run the setup script, then rename it into place."""
    staging = f"{target}.build-{os.getpid()}"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        arch = [f"--arch={recipe.arch}"] if recipe.arch else []
        run(["debootstrap", "--variant=minbase", *arch, "--include=" + ",".join(recipe.packages),
             recipe.suite, staging, recipe.mirror], timeout=BOOTSTRAP_TIMEOUT)
        setup_path = os.path.join(staging, "root", ".lab-setup.sh")
        env_path = os.path.join(staging, "root", ".lab-setup.env")
        with open(setup_path, "w") as handle:
            handle.write(recipe.setup)
        with open(env_path, "w") as handle:
            handle.write(f"SUITE={recipe.suite}\nMIRROR={recipe.mirror}\nSECURITY_MIRROR={recipe.security_mirror}\n")
        if recipe.trust:
            add_controller_trust(staging, recipe.trust)
        run(["chroot", staging, "/bin/sh", "-ec", ". /root/.lab-setup.env; . /root/.lab-setup.sh"],
            timeout=SETUP_TIMEOUT)
        os.remove(setup_path)
        os.remove(env_path)
        try:
            os.rename(staging, target)
        except OSError:
            if not os.path.isdir(target):
                raise
            discard(staging)  # another lab built the same recipe meanwhile: theirs is as good
    except (LabError, OSError) as exc:
        discard(staging)  # a failure leaves no half image behind
        raise LabError(f"base image build failed: {str(exc).splitlines()[0]}") from None


def _dead_staging(path: str) -> bool:
    """A staging directory whose builder is gone (killed mid-build); a live one is another lab's build."""
    pid = path.rsplit(".build-", 1)[1]
    return not (pid.isdigit() and pid_alive(int(pid)))


@contextlib.contextmanager
def _build_lock(target: str, timeout: float) -> Iterator[None]:
    """One build per recipe on the machine: labs started side by side wait for the first build and reuse it."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + ".lock", "w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"base image {target}: another build held its lock for {timeout:g} s") from None
                time.sleep(1.0)  # polling, so that the wait is bounded like every other step
        yield


def _same_kind(base: str, path: str) -> bool:
    """Is path an image of base's suite and architecture (bookworm-<id>, not bookworm-arm64-<id>)?"""
    return re.fullmatch(re.escape(base) + r"-[0-9a-f]{12}", path) is not None


def ensure_image(cache_dir: str, recipe: Recipe, check_mode: bool = False) -> ImageResult:
    """The image for the recipe under cache_dir, built when missing; older images no host uses go."""
    image_id = recipe.id()
    if recipe.arch:
        check_emulation(recipe.arch)
    base = os.path.join(cache_dir, recipe.name)
    target = f"{base}-{image_id}"
    mirrors = {"mirror": recipe.mirror, "security_mirror": recipe.security_mirror}
    if os.path.isdir(target):
        return ImageResult(target, image_id, changed=False, mirrors=mirrors)
    if check_mode:
        return ImageResult(target, image_id, changed=True, mirrors=mirrors)
    with _build_lock(target, BOOTSTRAP_TIMEOUT + SETUP_TIMEOUT):
        if os.path.isdir(target):  # built by another lab while this one waited
            return ImageResult(target, image_id, changed=False, mirrors=mirrors)
        for leftover in glob.glob(base + "-*.build-*"):
            if _same_kind(base, leftover.split(".build-")[0]) and _dead_staging(leftover):
                discard(leftover)
        started = time.monotonic()
        build(target, recipe)
        elapsed = round(time.monotonic() - started, 1)
    # older recipes are garbage once no host root is stacked on them
    for old in glob.glob(base + "-*"):
        if old != target and _same_kind(base, old) and not _in_use(old):
            discard(old)
            with contextlib.suppress(FileNotFoundError):
                os.remove(old + ".lock")
    return ImageResult(target, image_id, changed=True, build_seconds=elapsed, mirrors=mirrors)
