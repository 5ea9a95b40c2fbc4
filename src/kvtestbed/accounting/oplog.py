"""The op log: one JSON line per operation of a writer, `ops/<client>.jsonl` (format in docs/accounting.md).

Lines are buffered in memory and written by a flusher thread at least every `flush_interval_s` and on close, so a
writer thread never waits on the disk. A Ctrl-C (KeyboardInterrupt in the main thread, then a normal interpreter
exit) loses nothing: close() runs from the caller's `finally` or, failing that, from an atexit hook. Only a SIGKILL
of the controller can lose the last `flush_interval_s` of lines; the reader then ignores a truncated last line.
"""

from __future__ import annotations

import atexit
import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Result = Literal["ok", "fail", "unknown"]
RESULTS: tuple[str, ...] = ("ok", "fail", "unknown")


@dataclass(frozen=True)
class OpRecord:
    """One operation: invoked at t_start (intended at t_intended), completed at t_end (None: never completed).

    Times are seconds since the run's t0 (time.monotonic() on the controller)."""

    t_intended: float
    t_start: float
    t_end: float | None
    op: Literal["write", "read"]
    key: str
    value: str | None
    result: Result
    node: str | None
    error: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> OpRecord:
        result = data.get("result")
        if result not in RESULTS:
            raise ValueError(f"result must be one of {', '.join(RESULTS)}, not {result!r}")
        if data.get("op") not in ("write", "read"):
            raise ValueError(f"op must be write or read, not {data.get('op')!r}")
        t_end = data.get("t_end")
        return cls(
            t_intended=float(data["t_intended"]),  # type: ignore[arg-type]
            t_start=float(data["t_start"]),  # type: ignore[arg-type]
            t_end=None if t_end is None else float(t_end),  # type: ignore[arg-type]
            op=data["op"],  # type: ignore[arg-type]
            key=str(data["key"]),
            value=None if data.get("value") is None else str(data["value"]),
            result=result,  # type: ignore[arg-type]
            node=None if data.get("node") is None else str(data["node"]),
            error=None if data.get("error") is None else str(data["error"]),
        )


class OpLog:
    """Append-only writer of one client's op log; thread-safe append(), close() flushes and is idempotent."""

    def __init__(self, path: Path, flush_interval_s: float = 0.5) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives until close()
        self._pending: list[str] = []
        self._lock = threading.Lock()  # guards _pending
        self._file_lock = threading.Lock()  # one flush at a time, so lines keep their order in the file
        self._closed = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_loop, args=(flush_interval_s,), name=f"oplog-{path.stem}", daemon=True
        )
        self._flusher.start()
        atexit.register(self.close)  # the Ctrl-C path when the caller's finally never ran

    def append(self, record: OpRecord) -> None:
        line = record.to_json() + "\n"
        with self._lock:
            if self._closed.is_set():
                raise ValueError(f"op log {self.path} is closed")
            self._pending.append(line)

    def flush(self) -> None:
        with self._file_lock:
            with self._lock:
                lines, self._pending = self._pending, []
            if lines and not self._file.closed:
                self._file.write("".join(lines))
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        self._flusher.join(5)
        self.flush()
        with self._file_lock:
            self._file.close()
        atexit.unregister(self.close)

    def __enter__(self) -> OpLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _flush_loop(self, interval_s: float) -> None:
        while not self._closed.wait(interval_s):
            self.flush()


def iter_ops(path: Path) -> Iterator[OpRecord]:
    """The records of an op log in file order. A truncated last line (the controller was SIGKILLed mid-write) is
    skipped; a malformed line anywhere else raises ValueError naming the file and line."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield OpRecord.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError) as err:
            if number == len(lines) and not line.endswith("\n"):
                return
            raise ValueError(f"{path}:{number}: not an op record ({err})") from None


def read_ops(path: Path) -> list[OpRecord]:
    return list(iter_ops(path))


def read_ops_dir(ops_dir: Path) -> dict[str, list[OpRecord]]:
    """Every `<client>.jsonl` of a results folder's ops/ directory, by client name."""
    return {path.stem: read_ops(path) for path in sorted(ops_dir.glob("*.jsonl"))}
