"""An open-loop writer: `SET <prefix><client>:<seq> <value>` at a fixed rate, every op in the op log.

Keys: by default every op has a key of its own, `<prefix><client>:<seq>`. With `keys=N` the writer cycles over N
keys, `<prefix><i>` with i = seq mod N and no client name in them: writers with the same prefix and N write the same
key sequence, and at the same rate from the same start they write the same key at about the same time - shared keys
for the conflicts check. Values are `<client>:<nonce>-<seq>`, unique across writers and runs, so a value read back
names the writer and the op that wrote it.

Pacing as kvload's pacer: op n is intended at start + n/rate; its latency counts from the intended time (from the
actual send if it left early), and a writer that falls behind sends its overdue ops at once without moving its
schedule, so a stall shows as the queue it caused (no coordinated omission).

Threads, not asyncio: redis-py's Sentinel client, the thing the `redis-py` strategy measures, is the synchronous one
applications use, and one synchronous connection per writer is how such a client behaves under a fault (an op that
times out holds the writer for op_timeout_s). Each writer owns one thread that blocks only itself; socket waits and
sleeps release the GIL and an op costs ~0.1 ms of CPU, so several writers at 1000 ops/s each use a fraction of the
2 cores and the others keep their schedule while one waits out a timeout. asyncio would need one connection per op
in flight (redis-py does not multiplex) and a second, asynchronous Sentinel client that is not the one measured.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from kvtestbed.accounting.oplog import OpLog, OpRecord
from kvtestbed.accounting.sentinel_watch import SwitchMasterListener
from kvtestbed.accounting.strategies import AccountingError, PrimaryStrategy, SentinelTarget, make_strategy


class Watch(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class WriterCounts:
    attempted: int = 0
    ok: int = 0
    fail: int = 0
    unknown: int = 0


class _EventRelay:
    """Passes a strategy's events to its writer; holds those the strategy makes before the writer exists."""

    def __init__(self, t0: float) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[str, dict[str, Any], float]] = []
        self._writer: Writer | None = None

    def __call__(self, event: str, detail: dict[str, Any]) -> None:
        with self._lock:
            if self._writer is None:
                self._pending.append((event, detail, time.monotonic()))
                return
            writer = self._writer
        writer.client_event(event, detail)

    def attach(self, writer: Writer) -> None:
        with self._lock:
            self._writer = writer
            pending, self._pending = self._pending, []
        for event, detail, at in pending:
            writer.client_event(event, detail, at)


class Writer:
    """Start with start(); stop() (or the bounds max_ops / max_duration_s) ends it; the op log is closed by stop().

    `t0` is the run's t0 (time.monotonic() at run start): every time in the log and the events is seconds since t0.
    """

    def __init__(
        self,
        name: str,
        strategy: PrimaryStrategy,
        key_prefix: str,
        rate: float,
        oplog: OpLog,
        *,
        t0: float,
        max_ops: int,
        max_duration_s: float,
        target: SentinelTarget | None = None,
        listen_sentinels: bool = True,
        keys: int | None = None,
    ) -> None:
        if rate <= 0 or max_ops <= 0 or max_duration_s <= 0:
            raise AccountingError(f"writer {name}: rate, max_ops and max_duration_s must be positive")
        if keys is not None and keys <= 0:
            raise AccountingError(f"writer {name}: keys must be positive")
        self.name = name
        self.strategy = strategy
        self.key_prefix = key_prefix
        self.keys = keys
        self.rate = rate
        self.t0 = t0
        self.max_ops = max_ops
        self.max_duration_s = max_duration_s
        self.counts = WriterCounts()
        self._oplog = oplog
        self._nonce = secrets.token_hex(4)  # values unique across runs that reuse a prefix
        self._stop = threading.Event()
        self._events: list[dict[str, Any]] = []
        self._events_lock = threading.Lock()
        self._inflight: tuple[float, float, str, str, str | None] | None = None
        self._inflight_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"writer-{name}", daemon=True)
        self._listener = (
            SwitchMasterListener(target, t0, self._add_event, heard_by=name)
            if target is not None and listen_sentinels
            else None
        )
        self._watches: list[Watch] = []
        self._stopped = False

    @classmethod
    def for_strategy(
        cls,
        name: str,
        strategy_name: str,
        target: SentinelTarget,
        key_prefix: str,
        rate: float,
        oplog: OpLog,
        *,
        t0: float,
        max_ops: int,
        max_duration_s: float,
        listen_sentinels: bool = True,
        keys: int | None = None,
    ) -> Writer:
        """A writer with a strategy made from its name; the strategy's own events go to this writer's events."""
        relay = _EventRelay(t0)
        strategy = make_strategy(strategy_name, target, on_event=relay)
        writer = cls(
            name,
            strategy,
            key_prefix,
            rate,
            oplog,
            t0=t0,
            max_ops=max_ops,
            max_duration_s=max_duration_s,
            target=target,
            listen_sentinels=listen_sentinels,
            keys=keys,
        )
        relay.attach(writer)
        return writer

    def key_of(self, seq: int) -> str:
        """Op `seq`'s key (module doc)."""
        if self.keys is not None:
            return f"{self.key_prefix}{seq % self.keys}"
        return f"{self.key_prefix}{self.name}:{seq}"

    def value_of(self, seq: int) -> str:
        return f"{self.name}:{self._nonce}-{seq}"

    # --- public API ---
    def add_watch(self, watch: Watch) -> None:
        """A watch of the servers' roles (start/stop with the writer); give it `add_event` as its sink."""
        self._watches.append(watch)

    def add_event(self, event: dict[str, Any]) -> None:
        """A timeline event (preamble format) heard by one of this writer's watches."""
        self._add_event(event)

    def start(self) -> None:
        if self._listener is not None:
            self._listener.start()
        for watch in self._watches:
            watch.start()
        self._thread.start()

    def stop(self, join_timeout_s: float | None = None) -> None:
        """Stop, wait for the op in flight (at most op timeout + 1 s), log it as unknown if it never ended, close
        the strategy and the op log. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._thread.join(join_timeout_s if join_timeout_s is not None else self._op_bound_s())
        with self._inflight_lock:
            inflight, self._inflight = self._inflight, None
        if inflight is not None:  # never completed: t_end null, outcome unknown
            t_intended, t_start, key, value, node = inflight
            self._log(OpRecord(t_intended, t_start, None, "write", key, value, "unknown", node, "never completed"))
        if self._listener is not None:
            self._listener.stop()
        for watch in self._watches:
            watch.stop()
        if not self._thread.is_alive():
            self.strategy.close()
        self._oplog.close()

    def join(self, timeout_s: float) -> bool:
        """Wait for the bounds to end the writer; True if it ended."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def events(self) -> list[dict[str, Any]]:
        """Timeline events (preamble format) heard or made by this writer so far."""
        with self._events_lock:
            return list(self._events)

    def client_event(self, event: str, detail: dict[str, Any], at: float | None = None) -> None:
        t = (time.monotonic() if at is None else at) - self.t0
        self._add_event({"t": round(t, 6), "source": self.name, "event": event, "detail": detail})

    # --- internals ---
    def _op_bound_s(self) -> float:
        own_bound = getattr(self.strategy, "op_bound_s", None)
        if callable(own_bound):  # the cluster and JetStream strategies know their own
            return float(own_bound()) + 1.0
        target = getattr(self.strategy, "target", None)
        op_timeout = target.op_timeout_s + target.connect_timeout_s if target is not None else 2.0
        sentinels = len(target.sentinels) * target.sentinel_timeout_s if target is not None else 1.0
        return op_timeout + sentinels + 1.0

    def _add_event(self, event: dict[str, Any]) -> None:
        with self._events_lock:
            self._events.append(event)

    def _log(self, record: OpRecord) -> None:
        self.counts.attempted += 1
        setattr(self.counts, record.result, getattr(self.counts, record.result) + 1)
        self._oplog.append(record)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        start = time.monotonic()
        deadline = start + self.max_duration_s
        for seq in range(self.max_ops):
            intended = start + seq * interval
            if intended >= deadline:
                return
            delay = intended - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            if self._stop.is_set():
                return
            key = self.key_of(seq)
            value = self.value_of(seq)
            sent = time.monotonic()
            with self._inflight_lock:
                self._inflight = (intended - self.t0, sent - self.t0, key, value, None)
            outcome = self.strategy.set(key, value)
            ended = time.monotonic()
            with self._inflight_lock:
                if self._inflight is None:  # stop() gave up waiting and logged it already
                    return
                self._inflight = None
                self._log(
                    OpRecord(
                        round(intended - self.t0, 6),
                        round(sent - self.t0, 6),
                        round(ended - self.t0, 6),
                        "write",
                        key,
                        value,
                        outcome.result,
                        outcome.node,
                        outcome.error,
                    )
                )
