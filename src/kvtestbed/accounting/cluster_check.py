"""The cluster's own view of itself (CLUSTER NODES), its failovers as timeline events, and the read-back.

- ClusterRoleWatch polls `CLUSTER NODES` on the first node that answers every `interval_s` and records
  `{"source": "cluster", "event": "+failover", "detail": {"from": <old master>, "to": <new master>, "heard_from": ..}}`
  when a node that was a replica of a master is now a master itself (its old master failed or was taken over).
  The time is when the controller saw it: up to `interval_s` after the node that answered learned it.
- settled_masters() waits (bounded) until every node that answers says cluster_state:ok and all 16384 slots have a
  master that answers; read_back_cluster() then reads every key with MGETs grouped by slot (redis-py's
  mget_nonatomic: one pipeline per node).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from kvtestbed.accounting.cluster import ClusterTarget, connect_cluster
from kvtestbed.accounting.strategies import AccountingError, describe_error

TimelineSink = Callable[[dict[str, Any]], None]
SLOTS = 16384


@dataclass(frozen=True)
class ClusterNodeLine:
    """One line of CLUSTER NODES."""

    node_id: str
    address: str  # host:port (the client port)
    role: str  # master | replica
    master_id: str | None
    failed: bool
    slots: int

    @classmethod
    def parse(cls, line: str) -> ClusterNodeLine:
        parts = line.split()
        flags = parts[2].split(",")
        address = parts[1].split("@", 1)[0].split(",", 1)[0]
        slots = 0
        for item in parts[8:]:
            if item.startswith("["):  # a slot being imported or migrated
                continue
            first, _, last = item.partition("-")
            slots += int(last or first) - int(first) + 1
        return cls(
            node_id=parts[0],
            address=address,
            role="master" if "master" in flags else "replica",
            master_id=None if parts[3] == "-" else parts[3],
            failed="fail" in flags or "fail?" in flags,
            slots=slots,
        )


def parse_cluster_nodes(text: str) -> dict[str, ClusterNodeLine]:
    lines = [ClusterNodeLine.parse(line) for line in text.splitlines() if line.strip()]
    return {line.node_id: line for line in lines}


def cluster_nodes(target: ClusterTarget, timeout_s: float = 0.5) -> tuple[str, dict[str, ClusterNodeLine]] | None:
    """(the node that answered, its CLUSTER NODES) from the first node of the target that answers, or None."""
    kwargs = {**target.node_kwargs(), "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    for host, port in target.nodes:
        try:
            with redis.Redis(host=host, port=port, retry=Retry(NoBackoff(), 0), decode_responses=True,
                             **kwargs) as client:  # fmt: skip
                text = client.execute_command("CLUSTER", "NODES")
        except RedisError:
            continue
        return f"{host}:{port}", parse_cluster_nodes(str(text))
    return None


def masters(view: dict[str, ClusterNodeLine]) -> dict[str, int]:
    """{master address: slots} of the masters that hold slots and are not flagged failed."""
    return {n.address: n.slots for n in view.values() if n.role == "master" and n.slots and not n.failed}


def promotions(before: dict[str, ClusterNodeLine], after: dict[str, ClusterNodeLine]) -> list[dict[str, str]]:
    """[{from, to}] for every node that was a replica in `before` and is a master in `after`."""
    found = []
    for node_id, now in after.items():
        old = before.get(node_id)
        if old is None or old.role != "replica" or now.role != "master":
            continue
        master = before.get(old.master_id or "")
        found.append({"from": master.address if master else str(old.master_id), "to": now.address})
    return found


class ClusterRoleWatch:
    """Polls CLUSTER NODES and turns promotions into timeline events (module doc)."""

    def __init__(self, target: ClusterTarget, t0: float, sink: TimelineSink, interval_s: float = 0.2) -> None:
        self.target = target
        self.t0 = t0
        self.interval_s = interval_s
        self._sink = sink
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cluster-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2 + len(self.target.nodes))

    def _watch(self) -> None:
        previous: dict[str, ClusterNodeLine] | None = None
        while not self._stop.wait(self.interval_s):
            answer = cluster_nodes(self.target)
            if answer is None:
                continue
            heard_from, view = answer
            t = round(time.monotonic() - self.t0, 6)
            if previous is not None:
                for change in promotions(previous, view):
                    self._sink({"t": t, "source": "cluster", "event": "+failover",
                                "detail": {**change, "heard_from": heard_from}})  # fmt: skip
            previous = view


def settled_masters(target: ClusterTarget, timeout_s: float = 30.0, interval_s: float = 0.2) -> dict[str, int]:
    """{master: slots} once every answering node says cluster_state:ok and the answering masters hold all slots."""
    deadline = time.monotonic() + timeout_s
    last = "no node answered"
    kwargs = {**target.node_kwargs(), "socket_timeout": 1.0, "retry": Retry(NoBackoff(), 0)}
    while True:
        answer = cluster_nodes(target)
        if answer is not None:
            held = masters(answer[1])
            states = []
            for address in held:
                host, port = address.rsplit(":", 1)
                try:
                    with redis.Redis(host=host, port=int(port), decode_responses=True, **kwargs) as client:
                        states.append("cluster_state:ok" in str(client.execute_command("CLUSTER", "INFO")))
                except RedisError as err:
                    last = f"master {address} does not answer ({type(err).__name__})"
                    states.append(False)
            if sum(held.values()) == SLOTS and all(states):
                return held
            if all(states):
                last = f"the masters hold {sum(held.values())} of {SLOTS} slots"
        if time.monotonic() > deadline:
            raise AccountingError(f"{target.describe()} did not settle in {timeout_s:g} s: {last}")
        time.sleep(interval_s)


def read_back_cluster(target: ClusterTarget, keys: Iterable[str], timeout_s: float = 30.0, batch: int = 500
                      ) -> dict[str, str | None]:
    """Every key's value (None if missing), once the cluster has settled."""
    settled_masters(target, timeout_s)
    keys = list(dict.fromkeys(keys))
    client = connect_cluster(target, socket_timeout=max(target.op_timeout_s, 10.0), decode_responses=True)
    values: dict[str, str | None] = {}
    try:
        for first in range(0, len(keys), batch):
            chunk = keys[first : first + batch]
            values.update(zip(chunk, client.mget_nonatomic(chunk), strict=True))
    except RedisError as err:
        raise AccountingError(f"{target.describe()}: read-back failed: {describe_error(err)}") from None
    finally:
        client.close()
    return values
