"""`kvtestbed load run`: a real run writes its results folder; bad input is one line, exit 2, and no load.

Against a real redis-server on loopback: the server's own command counters (INFO commandstats) show that a
refused run sent nothing, and that a good run's counts are what Locust reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import free_port

pytestmark = pytest.mark.integration

KVTESTBED = [sys.executable, "-m", "kvtestbed.cli"]


def kvtestbed_load(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KVTESTBED, "load", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def data_commands(server) -> int:  # type: ignore[no-untyped-def]
    stats = server.client().info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_get", "cmdstat_set"))


def test_a_run_writes_its_results_folder_and_counts_what_the_server_counts(redis_server, tmp_path: Path) -> None:
    out = tmp_path / "run"
    before = data_commands(redis_server)
    proc = kvtestbed_load(
        "run", "KvGetSetUser", "--target", f"redis://127.0.0.1:{redis_server.port}", "-u", "8",
        "--rate", "constant:rate=500,for=3", "--option", "keys=100", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    hdr = json.loads((out / "hdr.json").read_text())
    counted = sum(h["count"] for h in hdr["requests"].values())
    assert counted == data_commands(redis_server) - before
    assert 1200 <= counted <= 1600  # 500/s for 3 s, open loop
    for name in ("load.json", "locust.json", "locust.html", "locust_stats.csv", "locust.log"):
        assert (out / name).is_file(), name
    assert "GET kv" in proc.stdout and f"results: {out}" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["NoSuchUser", "-t", "3s"], "unknown user class NoSuchUser"),
        (["KvGetUser", "--rate", "constant:rate=-100,for=5"], "rate=-100 is negative"),
        (["KvGetUser", "--rate", "step:from=100,by=100,every=20,for=10"], "comes after its end"),
        (["KvGetUser"], "--run-time: give a length"),
        (["KvGetUser", "-t", "3s", "-u", "-4"], "--users -4: must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_load(
    redis_server, tmp_path: Path, args: list[str], message: str
) -> None:
    before = data_commands(redis_server)
    proc = kvtestbed_load("run", *args, "--target", f"redis://127.0.0.1:{redis_server.port}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert data_commands(redis_server) == before


def test_an_unreachable_target_is_one_line_and_exit_2(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    proc = kvtestbed_load("run", "KvGetUser", "-t", "3s", "--target", f"redis://127.0.0.1:{port}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_a_wrong_password_is_one_line_exit_2_and_never_shown(server_factory, tmp_path: Path) -> None:
    server = server_factory("redis", password="right-one-7f3a")
    wrong = tmp_path / "password"
    wrong.write_text("wrong-one-19c2\n")
    proc = kvtestbed_load(
        "run", "KvGetUser", "-t", "3s", "--target", f"redis://127.0.0.1:{server.port}",
        "--password-file", str(wrong), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "authentication failed" in lines[0], proc.stderr
    assert "wrong-one" not in proc.stderr and "right-one" not in proc.stderr
    stats = server.client().info("commandstats")
    assert "cmdstat_get" not in stats


def test_a_stop_ends_locust_early_and_it_still_writes_its_reports(redis_server, tmp_path: Path) -> None:
    """What the scenario runner does on Ctrl-C or SIGTERM: Locust gets SIGTERM, stops, writes its results."""
    import threading
    import time

    from kvtestbed.load import runner as load_runner
    from tests.support.wait import wait_until

    spec = load_runner.LoadSpec(["KvGetUser"], f"redis://127.0.0.1:{redis_server.port}", users=2, run_time_s=120,
                                options={"keys": "10"})  # fmt: skip
    stop = threading.Event()
    outcome: list[load_runner.LoadResult] = []
    before = data_commands(redis_server)
    thread = threading.Thread(target=lambda: outcome.append(load_runner.run(spec, tmp_path / "run", stop=stop)))
    started = time.monotonic()
    thread.start()
    wait_until(lambda: data_commands(redis_server) - before > 1000, 60, 0.2, "Locust sending GETs")
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive() and time.monotonic() - started < 60  # far from its 120 s run time
    (result,) = outcome
    assert result.hdr["requests"]["GET kv"]["count"] > 1000, result.message
    assert (tmp_path / "run" / "locust.json").is_file()
