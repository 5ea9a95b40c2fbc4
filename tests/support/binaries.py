"""What a missing prerequisite (a server binary, a vendored source archive) means: on a developer's machine the
test is skipped with the install hint; in CI (CI=true, which .ci/run exports) the test FAILS, so a CI machine
without redis-server cannot report every server-backed test as "skipped" and still pass.

Every such skip in tests/ goes through `require` or `unavailable`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
# third-party inputs next to the checkout (see ../shared/vendor/README.md); absent in most clones
VENDOR = ROOT.parent / "shared" / "vendor"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(message: str) -> NoReturn:
    """Skip with `message`, or fail with it under CI."""
    if in_ci():
        pytest.fail(f"{message} [CI=true: a missing prerequisite fails instead of skipping]", pytrace=False)
    pytest.skip(message)


def require(binary: str | None, what: str, hint: str = "make deps installs it") -> str:
    """The path of `what` (found by the caller: shutil.which or a known location), or skip/fail naming it."""
    if not binary:
        unavailable(f"{what} is not installed ({hint})")
    return binary


def vendored(pattern: str) -> Path | None:
    """The newest file in ../shared/vendor matching `pattern`, if that directory exists."""
    found = sorted(VENDOR.glob(pattern)) if VENDOR.is_dir() else []
    return found[-1] if found else None


def not_given(pattern: str, message: str) -> NoReturn:
    """An input a test takes from the environment was not given: skip with `message`, but fail under CI when
    ../shared/vendor holds a file matching `pattern` (CI had it and should have passed it; .ci/run does)."""
    archive = vendored(pattern)
    if archive is None:
        pytest.skip(message)
    unavailable(f"{message}; {archive} is present")
