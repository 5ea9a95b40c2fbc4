#!/usr/bin/env python3
"""Build KeyDB from a release archive into a relocatable bundle of binaries: once per CPU architecture and Debian
release, on the controller when it matches the hosts, otherwise on one host of that architecture.

The kvstore role runs this file (copied or in place) and then copies the bundle to every host of that kind; the
test suite runs it on the controller for the KeyDB binaries its integration tests start. Standard library only,
Python 3.9+: it runs on a bare Debian or Raspberry Pi OS host.

    keydb_build.py probe                         # {"arch", "release", "tools": true/false}, the build host check
    keydb_build.py build --archive A --version V --out DIR [--sha256 H] [--jobs N] [--make-arg X ...]

`build` prints one JSON line: {"bundle": path, "changed": bool, "seconds": s}. A bundle whose manifest matches the
archive's checksum, the version and the make arguments is reused (changed false). Errors are one line on stderr,
exit 2 for bad input and 1 for a failed build (the build log's path is named, its tail printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# what `make BUILD_TLS=yes USE_SYSTEMD=yes` needs beyond a compiler (Debian package names; the role installs them
# on a build host, tools/install-deps.sh on the controller)
BUILD_HEADERS = ("libssl-dev", "libsystemd-dev", "uuid-dev", "libcurl4-openssl-dev", "zlib1g-dev")
BUILD_TOOLS = ("make", "gcc", "g++", "pkg-config", "autoconf", "libtoolize", "tclsh")
BINARIES = ("keydb-server", "keydb-cli", "keydb-benchmark", "keydb-check-aof", "keydb-check-rdb", "keydb-sentinel")


class Failure(Exception):
    def __init__(self, line: str, code: int = 1) -> None:
        super().__init__(line)
        self.code = code


def os_release() -> str:
    """The distribution's codename (bookworm), what the binaries' glibc and libssl depend on."""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "VERSION_CODENAME":
                return value.strip().strip('"')
    except OSError:
        pass
    return "unknown"


def installed(package: str) -> bool:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return False
    return out.endswith("install ok installed")


def probe() -> dict[str, object]:
    tools = all(shutil.which(tool) for tool in BUILD_TOOLS) and all(installed(p) for p in BUILD_HEADERS)
    return {"arch": platform.machine(), "release": os_release(), "tools": bool(tools)}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_name(version: str) -> str:
    return f"keydb-{version}-{os_release()}-{platform.machine()}"


def _run_logged(argv: list[str], cwd: Path, log: Path, what: str) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        # the summary first: a deploy shows a failure's first line (the tail's first line was a compiler warning)
        raise Failure(f"keydb build: {what} failed (exit {result.returncode}); full log: {log}\n{tail}")


def check_runs(server: Path) -> str:
    """The built server must start on this CPU: KeyDB 6.3.4's packages die with SIGILL on some (KeyDB #744)."""
    result = subprocess.run([str(server), "--version"], capture_output=True, text=True, check=False)
    if result.returncode == -signal.SIGILL:
        raise Failure(
            f"keydb build: {server.name} dies with SIGILL (illegal instruction) on this CPU (KeyDB #744, #774); "
            "try kvstore_keydb_source_version 6.3.3 or kvstore_keydb_make_args [\"OPT=-O2\"]"
        )
    if result.returncode != 0:
        raise Failure(f"keydb build: {server} --version exited {result.returncode}: {result.stderr.strip()[:200]}")
    return result.stdout.strip()


def unpack(bundle: Path, into: Path) -> None:
    """The binaries beside the bundle (<out>/<name>/bin), for whoever runs them on this machine (the tests)."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    subprocess.run(["tar", "xzf", str(bundle), "-C", str(into)], check=True)


def build(args: argparse.Namespace) -> dict[str, object]:
    archive = Path(args.archive)
    if not archive.is_file():
        raise Failure(f"keydb build: --archive {archive}: no such file", 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = bundle_name(args.version)
    bundle = out / f"{name}.tar.gz"
    manifest_path = out / f"{name}.json"
    checksum = sha256(archive)
    if args.sha256 and checksum != args.sha256.removeprefix("sha256:"):
        raise Failure(f"keydb build: {archive} has sha256 {checksum}, not the {args.sha256} asked for", 2)
    wanted = {"version": args.version, "archive_sha256": checksum, "make_args": args.make_arg}
    if bundle.is_file() and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if all(manifest.get(k) == v for k, v in wanted.items()):
            if not (out / name / "bin" / "keydb-server").is_file():
                unpack(bundle, out / name)
            return {"bundle": str(bundle), "changed": False, "seconds": 0.0, "name": name}

    started = time.monotonic()
    log = out / f"{name}.build.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="keydb-build-", dir=out) as work_dir:
        work = Path(work_dir)
        source, stage = work / "src", work / "stage"
        source.mkdir()
        _run_logged(["tar", "xzf", str(archive.resolve()), "--strip-components=1"], source, log, "unpacking")
        jobs = args.jobs or os.cpu_count() or 2
        _run_logged(
            ["make", f"-j{jobs}", "BUILD_TLS=yes", "USE_SYSTEMD=yes", *args.make_arg], source, log, "make"
        )
        _run_logged(["make", "install", f"PREFIX={stage}"], source, log, "make install")
        if shutil.which("strip"):
            # the symbol table stays (crash reports name functions); the DWARF of -g3 is 4/5 of the bundle
            _run_logged(["strip", "--strip-debug", *sorted(str(p) for p in (stage / "bin").iterdir())],
                        work, log, "strip")
        version_line = check_runs(stage / "bin" / "keydb-server")
        if f"v={args.version}" not in version_line:
            raise Failure(f"keydb build: the archive built {version_line!r}, not version {args.version}", 2)
        partial = out / f".{name}.tar.gz.part"
        _run_logged(["tar", "czf", str(partial), "-C", str(stage), "bin"], work, log, "packing the bundle")
        partial.replace(bundle)
    unpack(bundle, out / name)
    seconds = round(time.monotonic() - started, 1)
    manifest = {**wanted, "name": name, "server_version": version_line, "build_seconds": seconds, "jobs": jobs}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return {"bundle": str(bundle), "changed": True, "seconds": seconds, "name": name}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keydb_build.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("probe", help="print this host's architecture, release and whether it has the build tools")
    b = sub.add_parser("build", help="build (or reuse) the bundle for this host's kind")
    b.add_argument("--archive", required=True, help="KeyDB release archive (.tar.gz) on this machine")
    b.add_argument("--version", required=True, help="the release the archive holds, e.g. 6.3.4")
    b.add_argument("--out", required=True, help="directory of bundles (a cache: reused when it matches)")
    b.add_argument("--sha256", default="", help="expected sha256 of the archive")
    b.add_argument("--jobs", type=int, default=0, help="make -j (default: the CPU count)")
    b.add_argument("--make-arg", action="append", default=[], help="extra make argument (repeatable)")
    args = parser.parse_args(argv)
    try:
        result = probe() if args.command == "probe" else build(args)
    except Failure as failure:
        print(failure, file=sys.stderr)
        return failure.code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
