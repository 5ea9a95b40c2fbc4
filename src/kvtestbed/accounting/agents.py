"""The `agents` check: what the workload agents' own counters say was lost or duplicated, once they have drained.

The runner's writers are read back by the checker; the agents count their own end to end (each workload keeps a
ledger of its own, docs/agents.md), so this module only waits until those counts are final and puts them side by
side per workload:

- expiry: drained when every generator's final audit is out; lost = keys past deadline + grace never processed;
  duplicated = keys processed twice.
- streams: drained when every direct driver has issued all its requests and none is in flight; lost = requests
  whose every attempt failed, plus any still unanswered; duplicated = late (second) responses.
- pipeline: drained when the producers are done, the routes have nothing pending or unacknowledged and the
  aggregator's audit is steady; lost = published - distinct ids in the routes' ledgers; duplicated = routed twice.

Observer and hotkeys agents measure latency and balance, not loss: they are always drained and add nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

AgentSummaries = Mapping[str, tuple[str, Mapping[str, Any]]]  # agent name -> (kind, its /hdr summary)


@dataclass(frozen=True)
class DrainState:
    drained: bool
    waiting_for: tuple[str, ...]  # one short phrase per agent still busy, for the error line


def _num(tree: Mapping[str, Any], *path: str) -> float:
    value: Any = tree
    for key in path:
        if not isinstance(value, Mapping):
            return 0.0
        value = value.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _busy(name: str, kind: str, summary: Mapping[str, Any]) -> str | None:
    """Why this agent's counts are not final yet, or None."""
    role = summary.get("role")
    if kind == "expiry" and role == "generator":
        audit = summary.get("audit")
        if not isinstance(audit, Mapping):
            return f"{name}: generator's final audit not out (done={bool(summary.get('done'))})"
    elif kind == "streams":
        in_flight = int(_num(summary, "in_flight"))
        if summary.get("ingress") == "direct" and not summary.get("issued_all"):
            return f"{name}: issued {int(_num(summary, 'requests'))} requests so far"
        if in_flight:
            return f"{name}: {in_flight} requests in flight"
    elif kind == "pipeline" and role == "producer":
        if not summary.get("done"):
            return f"{name}: producer not done ({int(_num(summary, 'published'))} published)"
    elif kind == "pipeline" and role == "route":
        pending, ack_pending = int(_num(summary, "pending")), int(_num(summary, "ack_pending"))
        if pending or ack_pending:
            return f"{name}: route has {pending} pending, {ack_pending} unacknowledged"
    return None


def drain_state(agents: AgentSummaries, previous: AgentSummaries | None = None) -> DrainState:
    """Drained when no agent is busy and, for the pipeline, the aggregator's audit has not moved since the
    previous poll (it polls the store itself, a second behind the routes)."""
    waiting = [why for name, (kind, summary) in agents.items() if (why := _busy(name, kind, summary))]
    if not waiting and previous is not None:
        for name, (kind, summary) in agents.items():
            if kind == "pipeline" and summary.get("role") == "aggregator":
                before = previous.get(name, ("", {}))[1]
                if _num(summary, "audit", "distinct") != _num(before, "audit", "distinct"):
                    waiting.append(f"{name}: aggregator's audit still moving")
    elif not waiting and any(k == "pipeline" and s.get("role") == "aggregator" for k, s in agents.values()):
        waiting.append("pipeline aggregator: one more poll to see its audit steady")
    return DrainState(not waiting, tuple(waiting))


def _by_role(agents: AgentSummaries, kind: str, role: str | None = None) -> dict[str, Mapping[str, Any]]:
    return {name: s for name, (k, s) in agents.items() if k == kind and (role is None or s.get("role") == role)}


def _expiry(agents: AgentSummaries) -> dict[str, Any] | None:
    generators = _by_role(agents, "expiry", "generator")
    if not generators:
        return None
    audits = [s["audit"] for s in generators.values() if isinstance(s.get("audit"), Mapping)]
    out: dict[str, Any] = {
        "keys": sum(_num(a, "generated") for a in audits),
        "processed": sum(_num(a, "processed_keys") for a in audits),
        "lost": sum(_num(a, "lost") for a in audits),
        "duplicated": sum(_num(a, "processed_twice") for a in audits),
        "pending": sum(_num(a, "pending") for a in audits),
    }
    # the WorkQueue's spread over workers, as the ledger saw it (the generator's audit names each worker)
    per_worker: dict[str, float] = {}
    for audit in audits:
        for worker, count in (audit.get("per_worker") or {}).items():
            per_worker[str(worker)] = per_worker.get(str(worker), 0.0) + float(count)
    if per_worker:
        out["per_worker"] = per_worker
    consumers = _by_role(agents, "expiry", "consumer")
    if consumers:
        # events heard, published once, and suppressed as duplicates (by the store's dedup or by JetStream)
        out["per_consumer"] = {name: {key: _num(s, key) for key in ("received", "published", "suppressed")}
                               for name, s in consumers.items()}  # fmt: skip
        # the same, engine-neutral (a comparison of KeyDB's mesh with Redis's Sentinel set lines these up): the
        # events heard per key and consumer are the duplicates before deduplication (1 on one Redis node; each
        # KeyDB active replica expires a key itself, so about one per peer)
        for key in ("received", "published", "suppressed"):
            out[key] = sum(_num(s, key) for s in consumers.values())
        if out["keys"]:
            out["events_per_key_per_consumer"] = round(out["received"] / (out["keys"] * len(consumers)), 3)
    return out


def _streams(agents: AgentSummaries) -> dict[str, Any] | None:
    streams = _by_role(agents, "streams")
    if not streams:
        return None
    ingress = {n: s for n, s in streams.items() if s.get("ingress") not in (None, "off") and _num(s, "requests")}
    requests = sum(_num(s, "requests") for s in ingress.values())
    completed = sum(_num(s, "completed") for s in ingress.values())
    rejected = sum(_num(s, "rejected") for s in ingress.values())
    unanswered = sum(_num(s, "in_flight") for s in ingress.values())
    out: dict[str, Any] = {
        "requests": requests,
        "completed": completed,
        # every attempt of the request failed, or it was still waiting when the agent was read
        "lost": sum(_num(s, "lost") for s in ingress.values()) + unanswered,
        "rejected": rejected,
        "retries": sum(_num(s, "retries") for s in ingress.values()),
        "duplicated": sum(_num(s, "late_responses") for s in ingress.values()),
        "processed": sum(_num(s, "processed") for s in streams.values()),
        "reclaimed": sum(_num(s, "reclaimed") for s in streams.values()),
        "per_worker": {n: _num(s, "processed") for n, s in streams.items() if _num(s, "processed")},
    }
    return out


def _pipeline(agents: AgentSummaries) -> dict[str, Any] | None:
    producers = _by_role(agents, "pipeline", "producer")
    routes = _by_role(agents, "pipeline", "route")
    aggregators = _by_role(agents, "pipeline", "aggregator")
    if not producers and not routes:
        return None
    out: dict[str, Any] = {
        "published": sum(_num(s, "published") for s in producers.values()),
        "unpublished": sum(_num(s, "unpublished") for s in producers.values()),
        "publish_retries": sum(_num(s, "retries") for s in producers.values()),
        "redelivered": sum(_num(s, "duplicates") for s in routes.values()),
        "per_route": {str(s.get("route") or n): _num(s, "routed") for n, s in routes.items()},
    }
    audit = next((s.get("audit") for s in aggregators.values() if isinstance(s.get("audit"), Mapping)), None)
    if isinstance(audit, Mapping):
        # the store's ledger (a SET of ids per route) is the truth: an event acknowledged by the stream and in
        # no route's ledger is lost; one in both routes' ledgers was routed twice
        out["stored"] = _num(audit, "distinct")
        out["lost"] = max(0.0, out["published"] - out["stored"])
        out["duplicated"] = _num(audit, "routed_twice")
    return out


def account_agents(agents: AgentSummaries) -> dict[str, Any]:
    """Per workload the loss and duplicate figures (summary.json `accounting`, figures `accounting.<workload>.*`);
    a workload with no agent in the run is absent."""
    out: dict[str, Any] = {}
    for workload, build in (("expiry", _expiry), ("streams", _streams), ("pipeline", _pipeline)):
        entry = build(agents)
        if entry is not None:
            out[workload] = entry
    return out
