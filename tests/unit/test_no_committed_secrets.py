"""No secret in any committed file: generated passwords (secrets/) and literal credentials in configs.

The checker runs twice: on a copy of the tracked tree with secrets planted in it (it must name each one; a
fresh clone has no secrets/ at all, so the real tree alone would pass whatever the checker did), then on the
real tree (it must find nothing).
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# a credential directive followed by a literal value (templates use {{ ... }} instead)
LITERAL = re.compile(r"^\s*(requirepass|masterauth|sentinel auth-pass \S+|sentinel sentinel-pass)"
                     r"\s+(?!\{\{)(\S{8,})", re.MULTILINE)
TEMPLATED = re.compile(r"^(\s*(?:requirepass|masterauth))\s+(\{\{[^}]*\}\})", re.MULTILINE)
CONFIG_SUFFIXES = (".j2", ".yml", ".yaml", ".conf", ".cfg")


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)


def tracked(root: Path) -> list[Path]:
    names = _git(root, "ls-files", "-z").stdout
    return [root / n for n in names.split("\0") if n and (root / n).is_file()]


def generated_passwords(root: Path) -> list[str]:
    """What a deploy wrote under secrets/ (passwords only: short files, no certificates or keys)."""
    secrets_dir = root / "secrets"
    if not secrets_dir.is_dir():
        return []
    found = [p.read_text().strip() for p in secrets_dir.rglob("*")
             if p.is_file() and p.stat().st_size < 200 and p.suffix not in (".crt", ".key")]
    return [p for p in found if len(p) >= 16]


def committed_secrets(root: Path) -> list[str]:
    """One line per finding: a tracked file holding a generated password, or a literal credential in a config."""
    passwords = generated_passwords(root)
    findings = []
    for path in tracked(root):
        text = path.read_text(errors="ignore")
        rel = path.relative_to(root)
        findings += [f"{rel}: holds a generated password" for p in passwords if p in text]
        if path.suffix in CONFIG_SUFFIXES:
            findings += [f"{rel}: literal credential {m[1]}" for m in LITERAL.finditer(text)]
    return findings


def test_secrets_dir_is_ignored():
    assert _git(ROOT, "check-ignore", "-v", "secrets/redis-admin").stdout.strip()


def test_checker_names_each_planted_secret(tmp_path):
    copy = tmp_path / "repo"
    for path in tracked(ROOT):
        dest = copy / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    _git(copy, "init", "-q")
    _git(copy, "add", "-A")
    assert committed_secrets(copy) == [], "the unplanted copy must be clean, or the findings below prove nothing"

    # 1. a deploy generated passwords into secrets/ (ignored), and one of them was pasted into an inventory
    password = secrets.token_urlsafe(24)
    (copy / "secrets").mkdir()
    (copy / "secrets" / "redis-admin").write_text(password + "\n")
    inventory = sorted(p for p in tracked(copy) if p.match("inventory/*/group_vars/*.yml"))[0]
    inventory.write_text(inventory.read_text() + f'redis_admin_password: "{password}"\n')
    # 2. a generated secret file was force-added
    other = secrets.token_urlsafe(24)
    (copy / "secrets" / "nats_app").write_text(other + "\n")
    _git(copy, "add", "-f", "secrets/nats_app")
    # 3. a template's credential directive got a literal value in place of its {{ variable }}
    template = next(p for p in tracked(copy) if p.suffix == ".j2" and TEMPLATED.search(p.read_text()))
    match = TEMPLATED.search(template.read_text())
    assert match is not None
    template.write_text(TEMPLATED.sub(lambda m: f"{m[1]} hunter2-literal-value", template.read_text(), count=1))

    assert "secrets/redis-admin" not in _git(copy, "ls-files").stdout.split(), "secrets/ is not ignored"
    directive = match[1].strip()
    assert sorted(committed_secrets(copy)) == sorted([
        f"{inventory.relative_to(copy)}: holds a generated password",
        "secrets/nats_app: holds a generated password",
        f"{template.relative_to(copy)}: literal credential {directive}",
    ])


def test_real_tree_has_no_committed_secret():
    assert committed_secrets(ROOT) == []
