"""What a missing prerequisite (a server binary, a vendored source archive) means: on a developer's machine the
test is skipped with the install hint; in CI (CI=true, which .ci/run exports) the test FAILS, so a CI machine
without redis-server cannot report every server-backed test as "skipped" and still pass.

Every such skip in tests/ goes through `require` or `unavailable`.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


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
