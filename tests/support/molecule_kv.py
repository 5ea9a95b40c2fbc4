"""Helpers shared by the key-value roles' testinfra tests (kvstore, sentinel, tls_ca)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

SECRETS = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "secrets"


def secret(name: str) -> str:
    """A password the roles generated for this scenario (secrets live in the scenario's ephemeral dir)."""
    return (SECRETS / name).read_text().strip()


def cli(host, port: int, *args: str, deployment: str = "redis", engine: str = "redis", address: str = "127.0.0.1",
        extra: str = "") -> str:
    """Run <engine>-cli on the host as the deployment's admin user; the password travels in the environment."""
    auth = f"REDISCLI_AUTH={secret(deployment + '-admin')} " if deployment else ""
    user = "--user admin " if deployment else ""
    cmd = f"{auth}{engine}-cli {user}--no-auth-warning {extra} -h {address} -p {port} " + " ".join(args)
    return host.check_output(cmd)


def secrets() -> dict[str, str]:
    """Every password of this scenario's secrets dir, by file name (certificates and keys of secrets/tls left out)."""
    return {path.name: path.read_text().strip() for path in SECRETS.iterdir() if path.is_file()}


def command_lines(host) -> list[str]:
    """The command line of every process on the host, read by a command that carries no secret itself."""
    script = ("import glob\n"
              "for f in glob.glob('/proc/[0-9]*/cmdline'):\n"
              "    try:\n"
              "        print(open(f, 'rb').read().replace(b'\\0', b' ').decode(errors='replace'))\n"
              "    except OSError:\n"
              "        pass\n")
    return host.check_output(f"python3 -c {shlex.quote(script)}").splitlines()


def assert_no_secret_on_command_lines(host) -> None:
    """No password of the scenario appears on any process's command line (ps, /proc/<pid>/cmdline)."""
    lines = command_lines(host)
    assert len(lines) > 5, lines  # the scan saw the host's processes
    for name, value in secrets().items():
        leaks = [line.replace(value, "<" + name + ">") for line in lines if value in line]
        assert not leaks, f"password {name} on a command line: {leaks}"


def assert_secrets_private() -> None:
    """The secrets dir the roles generate into is 0700 and every file and dir under it 0600 / 0700."""
    assert SECRETS.is_dir(), SECRETS
    found = [SECRETS, *SECRETS.rglob("*")]
    for path in found:
        mode = path.stat().st_mode & 0o777
        wanted = 0o700 if path.is_dir() else 0o600
        assert mode == wanted, f"{path.relative_to(SECRETS.parent)}: mode {mode:o}, wanted {wanted:o}"
    assert len(found) > 1, "no secrets generated"
