"""What every benchmark module shares: where processes run, and a redis-server pinned to the server's CPU."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.binaries import require
from tests.support.placement import Placement
from tests.support.servers import RedisServer


@pytest.fixture(scope="module")
def placement() -> Placement:
    return Placement()


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def redis_srv(bench_dir: Path, placement: Placement) -> Iterator[RedisServer]:
    binary = require(shutil.which("redis-server"), "redis-server")
    server = RedisServer(binary, bench_dir / "redis")
    server.argv = placement.server_argv(server.argv)
    server.start()
    yield server
    server.stop()
