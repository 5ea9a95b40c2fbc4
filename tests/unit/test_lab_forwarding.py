"""IPv4 forwarding is shared by every lab on the machine: on while any lab holds it, the original value back
when the last one goes, labs whose state directory is gone ignored."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kvtestbed.lab import forwarding


@pytest.fixture
def machine(tmp_path):
    """A labs' state directory and a stand-in for /proc/sys/net/ipv4/ip_forward, forwarding off."""
    forward = tmp_path / "ip_forward"
    forward.write_text("0\n")
    records = tmp_path / "lab"
    records.mkdir()
    return records, forward


def lab_dir(records: Path, name: str) -> str:
    path = records / name
    path.mkdir(exist_ok=True)
    return str(path)


def value(forward: Path) -> str:
    return forward.read_text().strip()


def test_one_lab_turns_it_on_and_restores_the_original(machine):
    records, forward = machine
    assert forwarding.acquire(str(records), "a", lab_dir(records, "a"), str(forward)) is True
    assert value(forward) == "1"
    assert forwarding.load(str(records)).before == "0"
    assert forwarding.release(str(records), "a", str(forward)) is True
    assert value(forward) == "0"
    assert forwarding.load(str(records)) is None


def test_it_stays_on_while_another_lab_holds_it(machine):
    records, forward = machine
    for name in ("a", "b", "c"):
        forwarding.acquire(str(records), name, lab_dir(records, name), str(forward))
    assert forwarding.release(str(records), "b", str(forward)) is False
    assert value(forward) == "1"
    assert forwarding.release(str(records), "a", str(forward)) is False
    assert value(forward) == "1"
    assert sorted(forwarding.load(str(records)).holders) == ["c"]
    assert forwarding.release(str(records), "c", str(forward)) is True
    assert value(forward) == "0"


def test_the_original_value_is_the_one_before_the_first_lab(machine):
    """A second lab sees forwarding on (the first turned it on): that is not the value to restore."""
    records, forward = machine
    forwarding.acquire(str(records), "a", lab_dir(records, "a"), str(forward))
    forwarding.acquire(str(records), "b", lab_dir(records, "b"), str(forward))
    forwarding.release(str(records), "a", str(forward))
    forwarding.release(str(records), "b", str(forward))
    assert value(forward) == "0"


def test_a_machine_that_forwards_already_keeps_forwarding(machine):
    records, forward = machine
    forward.write_text("1\n")
    assert forwarding.acquire(str(records), "a", lab_dir(records, "a"), str(forward)) is False
    assert forwarding.release(str(records), "a", str(forward)) is False
    assert value(forward) == "1"


def test_a_stale_holder_does_not_keep_it_on(machine):
    records, forward = machine
    forwarding.acquire(str(records), "gone", lab_dir(records, "gone"), str(forward))
    forwarding.acquire(str(records), "b", lab_dir(records, "b"), str(forward))
    shutil.rmtree(records / "gone")  # a lab whose state was removed without a down
    assert forwarding.release(str(records), "b", str(forward)) is True
    assert value(forward) == "0"
    assert forwarding.load(str(records)) is None


def test_a_stale_record_keeps_its_original_value(machine):
    """Only stale holders left: the next lab drops them but keeps the value from before them."""
    records, forward = machine
    forwarding.acquire(str(records), "gone", lab_dir(records, "gone"), str(forward))
    shutil.rmtree(records / "gone")
    forwarding.acquire(str(records), "b", lab_dir(records, "b"), str(forward))
    record = forwarding.load(str(records))
    assert (record.before, sorted(record.holders)) == ("0", ["b"])
    forwarding.release(str(records), "b", str(forward))
    assert value(forward) == "0"


def test_release_without_a_record_touches_nothing(machine):
    records, forward = machine
    forward.write_text("1\n")
    assert forwarding.release(str(records), "a", str(forward)) is None
    assert value(forward) == "1"


def test_a_repeated_up_or_down_of_one_lab_is_harmless(machine):
    records, forward = machine
    forwarding.acquire(str(records), "a", lab_dir(records, "a"), str(forward))
    forwarding.acquire(str(records), "a", lab_dir(records, "a"), str(forward))
    forwarding.acquire(str(records), "b", lab_dir(records, "b"), str(forward))
    forwarding.release(str(records), "a", str(forward))
    forwarding.release(str(records), "a", str(forward))
    assert value(forward) == "1"
    forwarding.release(str(records), "b", str(forward))
    assert value(forward) == "0"


def test_labs_side_by_side_lose_no_holder(machine):
    """Eight labs coming up at once all end up in the record (the lock serialises read-modify-write)."""
    records, forward = machine
    names = [f"lab{i}" for i in range(8)]
    dirs = {name: lab_dir(records, name) for name in names}
    holders_when_all_up: list[list[str]] = []
    # the barrier's action runs once every lab has acquired and none has released yet
    all_up = threading.Barrier(len(names), action=lambda: holders_when_all_up.append(
        sorted(forwarding.load(str(records)).holders)))

    def lab(name: str) -> None:
        forwarding.acquire(str(records), name, dirs[name], str(forward))
        all_up.wait(timeout=30)
        forwarding.release(str(records), name, str(forward))

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lab, names))
    assert holders_when_all_up == [names]
    assert value(forward) == "0"
    assert forwarding.load(str(records)) is None


def test_a_lab_from_before_the_record_brings_its_original_value(machine):
    """A lab that came up before the record existed saved the original value itself; forwarding is on now."""
    records, forward = machine
    forward.write_text("1\n")
    forwarding.acquire(str(records), "old", lab_dir(records, "old"), str(forward), before="0")
    forwarding.acquire(str(records), "b", lab_dir(records, "b"), str(forward), before="1")  # a record exists now
    assert forwarding.load(str(records)).before == "0"
    forwarding.release(str(records), "old", str(forward))
    forwarding.release(str(records), "b", str(forward))
    assert value(forward) == "0"
