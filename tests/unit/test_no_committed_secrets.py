"""No secret in any committed file: generated passwords (secrets/) and literal credentials in configs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# a credential directive followed by a literal value (templates use {{ ... }} instead)
LITERAL = re.compile(r"^\s*(requirepass|masterauth|sentinel auth-pass \S+|sentinel sentinel-pass)"
                     r"\s+(?!\{\{)(\S{8,})", re.MULTILINE)


def _tracked() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / n for n in names.split("\0") if n and (ROOT / n).is_file()]


def test_secrets_dir_is_ignored():
    assert subprocess.run(["git", "check-ignore", "-q", "secrets/redis-admin"], cwd=ROOT).returncode == 0


def test_no_generated_password_is_committed():
    secrets_dir = ROOT / "secrets"
    passwords = [p.read_text().strip() for p in secrets_dir.rglob("*")
                 if p.is_file() and p.stat().st_size < 200 and p.suffix not in (".crt", ".key")] \
        if secrets_dir.is_dir() else []
    passwords = [p for p in passwords if len(p) >= 16]
    for path in _tracked():
        text = path.read_text(errors="ignore")
        assert not [p for p in passwords if p in text], f"{path.relative_to(ROOT)} holds a generated password"


def test_no_literal_credentials_in_configs():
    for path in _tracked():
        if path.suffix in (".j2", ".yml", ".yaml", ".conf", ".cfg"):
            found = LITERAL.findall(path.read_text(errors="ignore"))
            assert not found, f"{path.relative_to(ROOT)}: literal credential {found[0][0]}"
