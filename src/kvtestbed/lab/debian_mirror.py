#!/usr/bin/env python3
"""Print the Debian mirror this machine's apt already uses, so nothing in the project names a registry.

Reads /etc/apt/sources.list and /etc/apt/sources.list.d/*.list|*.sources (one-line and deb822 forms).
Prints the archive URI (`--kind archive`, default) or the security URI (`--kind security`).
Exit 2 with one line on stderr when none is configured.

Standard library only: tools/install-deps.sh runs it as a script with the system python3 before the venv
exists (`python3 src/kvtestbed/lab/debian_mirror.py`), and lab image builds import it.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Iterable, Iterator

APT_DIR = "/etc/apt"


def _one_line_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = [w for w in line.split()[1:] if not w.startswith("[")]
        # an options block "[signed-by=… arch=…]" may hold spaces; drop its pieces
        words = [w for w in words if not w.endswith("]") and "=" not in w]
        if len(words) >= 2:
            yield words[0], [words[1]]


def _deb822_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw:
                continue
            key, value = raw.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split()


def entries(apt_dir: str = APT_DIR) -> Iterable[tuple[str, list[str]]]:
    for path in [f"{apt_dir}/sources.list", *sorted(glob.glob(f"{apt_dir}/sources.list.d/*.list"))]:
        try:
            with open(path, encoding="utf-8") as handle:
                yield from _one_line_entries(handle.read())
        except OSError:
            continue
    for path in sorted(glob.glob(f"{apt_dir}/sources.list.d/*.sources")):
        try:
            with open(path, encoding="utf-8") as handle:
                yield from _deb822_entries(handle.read())
        except OSError:
            continue


def find_mirror(kind: str = "archive", apt_dir: str = APT_DIR) -> str | None:
    for uri, suites in entries(apt_dir):
        is_security = any(s.endswith("-security") or s.endswith("/updates") for s in suites)
        if kind == "security" and is_security:
            return uri.rstrip("/")
        if kind == "archive" and not is_security and uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("archive", "security"), default="archive")
    parser.add_argument("--apt-dir", default=APT_DIR)
    args = parser.parse_args(argv)
    mirror = find_mirror(args.kind, args.apt_dir)
    if mirror is None:
        print(f"debian_mirror: no Debian {args.kind} mirror in {args.apt_dir}/sources.list*; "
              "configure apt first", file=sys.stderr)
        return 2
    print(mirror)
    return 0


if __name__ == "__main__":
    sys.exit(main())
