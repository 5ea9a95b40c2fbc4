"""The Workload tab's figures: the agents' own counters (their /hdr JSON), the expiry run's ledger audit, and
Locust's statistics, as rows of one table.

Each agent is read with a short timeout, all of them at once (greenlets); an agent that does not answer is a row
saying so, never an error of the page. Agent counters are cumulative per agent process: a figure's "this run" is
the difference from the value read when the run started (test_start), shown only when the agent is the same
process (same pid and start time) as then; "since agent start" is the raw value.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import gevent
from locust.env import Environment

from kvload.plugin import PreflightError
from kvload.stats import recorder
from kvload.users.workloads.common import one_line
from kvload.users.workloads.expiry import ExpiryAudit, ExpiryRun, evenness, expiry_run

AGENT_TIMEOUT_S = 1.0
CACHE_S = 1.0  # the UI polls every 2 s per open page; several pages share one reading
# HdrHistogram summaries inside an agent's summary (LatencyMetric.summary): shown as p50/p99, never as counters
LATENCY_FIELDS = frozenset({"count", "p50_us", "p99_us", "p999_us", "max_us", "min_us", "mean_us"})
# integer fields that are levels, not counts: no "this run" difference for them
GAUGES = frozenset(
    {
        "pid",
        "rss_bytes",
        "in_flight",
        "pending_entries",
        "nodes",
        "clock_offset_us",
        "clock_uncertainty_us",
        "connected",
        "disconnected_seconds",
        "background_keys",
        "last_deadline_ms",
        "at_ms",
    }
)
MAX_ROWS_PER_AGENT = 60

# the agents' own /hdr needs no proxy, and a proxy from the environment must not see their loopback URLs
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def agent_urls(text: str) -> list[str]:
    """--kvt-agents: agent HTTP base URLs (http://host:port), comma-separated; PreflightError for anything else."""
    urls = []
    for raw in (text or "").split(","):
        part = raw.strip()
        if not part:
            continue
        if "://" not in part:
            part = f"http://{part}"
        parsed = urlparse(part)
        try:
            parsed.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise PreflightError(f"--kvt-agents: {parsed.hostname}: the port must be a number 1..65535") from None
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise PreflightError("--kvt-agents: give agent HTTP base URLs, e.g. http://10.0.0.2:9400, comma-separated")
        if parsed.username or parsed.password:
            raise PreflightError("--kvt-agents: agent URLs carry no credentials")
        urls.append(part.rstrip("/"))
    return urls


@dataclass
class AgentReading:
    url: str
    ok: bool
    error: str = ""
    kind: str = ""
    pid: int | None = None
    started: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return str(self.summary.get("role", "") or "")

    @property
    def label(self) -> str:
        name = self.summary.get("name") or ""
        what = " ".join(x for x in (self.kind, self.role, str(name)) if x)
        return f"{what or 'agent'} @ {urlparse(self.url).netloc}"

    def same_process(self, other: AgentReading | None) -> bool:
        return other is not None and other.ok and (other.pid, other.started) == (self.pid, self.started)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "error": self.error,
            "kind": self.kind,
            "role": self.role,
            "pid": self.pid,
            "summary": self.summary,
        }


def read_agent(url: str, timeout_s: float = AGENT_TIMEOUT_S) -> AgentReading:
    """GET <url>/hdr: the agent's kind, pid, start time and summary (its counters)."""
    try:
        with _OPENER.open(f"{url}/hdr", timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return AgentReading(url, False, f"answered HTTP {exc.code}")
    except urllib.error.URLError as exc:
        return AgentReading(url, False, f"not answering ({one_line(str(exc.reason))})")
    except (OSError, TimeoutError) as exc:
        return AgentReading(url, False, f"not answering ({one_line(exc)})")
    except ValueError:
        return AgentReading(url, False, "answered, but not with an agent's /hdr JSON")
    if not isinstance(body, dict) or not isinstance(body.get("summary"), dict):
        return AgentReading(url, False, "answered, but not with an agent's /hdr JSON")
    return AgentReading(url, True, "", str(body.get("kind", "")), body.get("pid"), body.get("started"), body["summary"])


def read_agents(urls: list[str], timeout_s: float = AGENT_TIMEOUT_S) -> list[AgentReading]:
    jobs = [gevent.spawn(read_agent, url, timeout_s) for url in urls]
    gevent.joinall(jobs, timeout=timeout_s + 1.0)
    out = []
    for url, job in zip(urls, jobs, strict=True):
        if job.successful() and job.value is not None:
            out.append(job.value)
        else:
            job.kill(block=False)
            out.append(AgentReading(url, False, f"not answering (no reply within {timeout_s:g} s)"))
    return out


# ------------------------------------------------------------------------------------------------- rows


def row(section: str, figure: str, run: Any = "", total: Any = "", source: str = "") -> dict[str, Any]:
    # single-word keys: the React UI camel-cases the keys of what /stats/requests returns
    return {"section": section, "figure": figure, "run": _show(run), "total": _show(total), "source": source}


def _show(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return round(value, 4)
    return value


def flatten(summary: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """An agent's summary as "a.b.c" -> scalar; latency summaries become "<name> p50 us" / "<name> p99 us"."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}.{key}" if prefix and key else (prefix or str(key))
        if isinstance(value, dict):
            if value and set(value) <= LATENCY_FIELDS:
                out[f"{name} count"] = value.get("count")
                if value.get("count"):
                    out[f"{name} p50 us"] = value.get("p50_us")
                    out[f"{name} p99 us"] = value.get("p99_us")
            elif depth < 3:
                out.update(flatten(value, name, depth + 1))
        elif isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 80):
            out[name] = value
    return out


def _is_counter(name: str, value: Any) -> bool:
    last = name.rsplit(".", 1)[-1]
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and last not in GAUGES
        and not name.endswith((" p50 us", " p99 us"))
    )


def _delta(now: AgentReading, base: AgentReading | None) -> dict[str, int]:
    """This run's share of every counter of `now`, when `base` is the same agent process read at the run's start."""
    if base is None or not now.same_process(base):
        return {}
    before = flatten(base.summary)
    out = {}
    for name, value in flatten(now.summary).items():
        old = before.get(name, 0)
        if _is_counter(name, value) and isinstance(old, int) and value >= old:
            out[name] = value - old
    return out


def agent_rows(readings: list[AgentReading], baseline: dict[str, AgentReading]) -> list[dict[str, Any]]:
    rows = []
    for reading in readings:
        source = f"{reading.url}/hdr"
        if not reading.ok:
            rows.append(row(f"agent @ {urlparse(reading.url).netloc}", "status", reading.error, "", source))
            continue
        rows.append(row(reading.label, "status", "answering", f"pid {reading.pid}", source))
        if reading.kind == "expiry" and reading.role in ("consumer", "worker"):
            continue  # their figures are in the expiry rows above
        delta = _delta(reading, baseline.get(reading.url))
        flat = flatten(reading.summary)
        for name, value in list(flat.items())[:MAX_ROWS_PER_AGENT]:
            rows.append(row(reading.label, name, delta.get(name, ""), value, source))
    return rows


def _lat(summary: dict[str, Any], metric: str) -> str:
    """ "p50 / p99 ms" of an agent latency summary ({label: {count, p50_us, p99_us, ...}}), merged labels first."""
    values = summary.get(metric) or {}
    if not isinstance(values, dict):
        return ""
    stats = values.get("") if isinstance(values.get(""), dict) else values
    if not isinstance(stats, dict) or not stats.get("count"):
        return ""
    return f"{stats['p50_us'] / 1000:.1f} / {stats['p99_us'] / 1000:.1f} ms (n={stats['count']})"


def expiry_rows(
    run: ExpiryRun, readings: list[AgentReading], baseline: dict[str, AgentReading]
) -> list[dict[str, Any]]:
    s = run.settings
    requests, failures = run.outcomes()
    rows = [
        row("expiry run", "phase", run.phase, "", "Locust"),
        row("expiry run", "run id / key prefix", f"{s.run_id} / {s.key_prefix}", "", "form"),
        row("expiry run", "keys requested", s.keys, "", "form"),
        row("expiry run", "keys set", requests - failures, "", "Locust (SET PX + ledger ZADD)"),
        row("expiry run", "SET failures", failures, "", "Locust"),
        row("expiry run", "TTL ms", s.ttl_ms, "", "form"),
        row("expiry run", "delay between keys ms (per user)", s.delay_ms, "", "form"),
        row("expiry run", "grace ms", s.grace_ms, "", "form"),
        row(
            "expiry run",
            "duplicate window s",
            s.dedup_window_s if s.dedup_window_s > 0 else "as the consumers are configured",
            "",
            "form; set by the consumers (stream.duplicate_window_s), not by Locust",
        ),
    ]
    if run.error:
        rows.append(row("expiry run", "error", run.error, "", "Locust"))
    audit = run.current_audit()
    src = "ledger audit (this run's keys)"
    if audit is not None:
        rows += _audit_rows(audit, src)
    consumers = [r for r in readings if r.ok and r.kind == "expiry" and r.role == "consumer"]
    workers = [r for r in readings if r.ok and r.kind == "expiry" and r.role == "worker"]
    caught = 0
    for c in consumers:
        d = _delta(c, baseline.get(c.url))
        caught += d.get("suppressed", 0)
        src_c = f"{c.url}/hdr"
        for name, title in (
            ("received", "events received"),
            ("suppressed", "duplicates caught by dedup"),
            ("published", "published to the work queue"),
            ("early", "received before the deadline (clock skew)"),
        ):
            rows.append(
                row(f"consumer {c.summary.get('name', '')}", title, d.get(name, ""), c.summary.get(name), src_c)
            )
        rows.append(
            row(f"consumer {c.summary.get('name', '')}", "expiry lag p50 / p99", "", _lat(c.summary, "lag"), src_c)
        )
    if consumers and audit is not None:
        rows.append(
            row(
                "duplicates",
                "before dedup (caught + after)",
                caught + audit.extra_processings,
                "",
                "consumers' suppressed + ledger extra processings",
            )
        )
        rows.append(row("duplicates", "after dedup (extra processings)", audit.extra_processings, "", src))
    shares: dict[str, int] = {}
    for w in workers:
        d = _delta(w, baseline.get(w.url))
        name = str(w.summary.get("name", w.url))
        if "processed" in d:  # this run's share is known only for an agent read at the run's start
            shares[name] = d["processed"]
        src_w = f"{w.url}/hdr"
        rows.append(row(f"worker {name}", "processed", d.get("processed", ""), w.summary.get("processed"), src_w))
        rows.append(
            row(
                f"worker {name}",
                "processed twice",
                d.get("processed_twice", ""),
                w.summary.get("processed_twice"),
                src_w,
            )
        )
        rows.append(row(f"worker {name}", "process lag p50 / p99", "", _lat(w.summary, "process_lag"), src_w))
    if shares:
        even = evenness(shares.values())
        total = sum(shares.values())
        for name, n in sorted(shares.items()):
            share = f"{n} ({100 * n / total:.1f} %)" if total else n
            rows.append(row("distribution over workers", name, share, "", "workers' /hdr, this run"))
        rows.append(row("distribution over workers", "max/min", even.get("max_min", ""), "", "workers' /hdr"))
        rows.append(row("distribution over workers", "cv", even.get("cv", ""), "", "workers' /hdr"))
    return rows


def _audit_rows(audit: ExpiryAudit, src: str) -> list[dict[str, Any]]:
    rows = [
        row("ledger audit", "generated", audit.generated, "", src),
        row("ledger audit", "consumed (processed keys)", audit.processed_keys, "", src),
        row("ledger audit", "pending", audit.pending, "", src),
        row("ledger audit", "lost", audit.lost, "", src),
        row("ledger audit", "processed twice (keys)", audit.processed_twice, "", src),
        row("ledger audit", "unknown processed", audit.unknown_processed, "", src),
        row("ledger audit", "complete", audit.complete, "", src),
    ]
    total = sum(audit.per_worker.values())
    for name, n in sorted(audit.per_worker.items()):
        rows.append(row("ledger audit", f"processed by {name}", f"{n} ({100 * n / total:.1f} %)", "", src))
    for name in ("max_min", "cv"):
        if name in audit.evenness:
            rows.append(row("ledger audit", f"per-worker {name.replace('_', '/')}", audit.evenness[name], "", src))
    return rows


def locust_rows(environment: Environment) -> list[dict[str, Any]]:
    runner = environment.runner
    rows = [row("Locust", "state", getattr(runner, "state", ""), "", "Locust")]
    error = getattr(environment, "kvt_last_error", None)
    if error:
        rows.append(row("Locust", "error", error, "", "kvload preflight"))
    rec = recorder(environment)
    hdr = rec.store.as_json()["requests"]
    for entry in sorted(environment.stats.entries.values(), key=lambda e: (e.method or "", e.name)):
        key = f"{entry.method} {entry.name}"
        rows.append(
            row("Locust", f"{key}: requests / failures", f"{entry.num_requests} / {entry.num_failures}", "", "Locust")
        )
        h = hdr.get(key, {})
        if h.get("count"):
            rows.append(row("Locust", f"{key}: p50 / p99", f"{h['p50_us']} / {h['p99_us']} us", "", "Locust /hdr"))
    return rows


def collect(environment: Environment, urls: list[str], baseline: dict[str, AgentReading]) -> dict[str, Any]:
    """Everything the tab shows, read now: {"at", "rows", "agents", "expiry"}."""
    readings = read_agents(urls)
    rows = locust_rows(environment)
    run = expiry_run(environment)
    expiry: dict[str, Any] | None = None
    if run is not None:
        rows += expiry_rows(run, readings, baseline)
        audit = run.audit
        requests, failures = run.outcomes()
        expiry = {
            "phase": run.phase,
            "token": run.token,
            "settings": run.settings.__dict__,
            "keys_set": requests - failures,
            "set_failures": failures,
            "audit": audit.as_dict() if audit is not None else None,
            "error": run.error,
        }
    rows += agent_rows(readings, baseline)
    return {
        "at": time.time(),
        "state": getattr(environment.runner, "state", None),
        "error": getattr(environment, "kvt_last_error", None),
        "expiry": expiry,
        "agents": [r.as_dict() for r in readings],
        "rows": rows,
    }
