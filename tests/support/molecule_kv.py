"""Helpers shared by the key-value roles' testinfra tests (kvstore, sentinel, tls_ca)."""

from __future__ import annotations

import os
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
