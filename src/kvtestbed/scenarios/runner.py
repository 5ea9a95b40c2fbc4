"""`kvtestbed run SCENARIO`: one scenario (each sweep point, each repeat) from inventory to report.

The order of a run, and why:
1. Everything that can be refused is checked before anything starts (exit 2): the file, the inventory it needs,
   SSH to every host it touches, every fault's entry, the writers' secrets.
2. Leftovers of an earlier runner are healed on the hosts (heal_all), as ducktape and multipass learned to.
3. Agents start, then the runner's own writers (t0: the run's clock), then the warm-up, then the measured phase
   with the fault schedule (each fault in a thread of its own: inject, wait `for`, heal, verify).
4. Whatever ends the run (its end, Ctrl-C, SIGTERM, an error) the faults are healed and the agents stopped in a
   `finally`, and a runner killed outright is covered by the dead-man timers the faults armed on the hosts.
5. After the heal, the checks (read-back of every write from the primary the Sentinels agree on), the summary with
   its SLOs, the report. Exit 1 when an SLO is violated or the run failed.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from kvtestbed.accounting import (
    AccountingError,
    GroupRead,
    NodeSet,
    NodeTarget,
    OpLog,
    OpRecord,
    SentinelTarget,
    Writer,
    agreed_primary,
    check_conflicts,
    check_run_any,
    check_run_nodes,
    ensure_stream,
    kind_of,
    make_writer,
    merge_conflicts,
    read_group,
    read_ops,
    value_index,
)
from kvtestbed.accounting.agents import account_agents, drain_state
from kvtestbed.accounting.availability import compare_failover, faults_on_hosts, servers_failover
from kvtestbed.faults import Fault, FaultError, FaultSpecError, FaultUnsupported, heal_all, make_context, make_fault
from kvtestbed.faults.registry import default_secrets_dir
from kvtestbed.inventory import Host, Inventory, InventoryError
from kvtestbed.load import engine_tools
from kvtestbed.load import master as load_master
from kvtestbed.load import runner as load_runner
from kvtestbed.monitoring.capture import capture_run
from kvtestbed.monitoring.runner_metrics import RunnerMetrics
from kvtestbed.remote import RemoteError, Remotes
from kvtestbed.report import write_report
from kvtestbed.results.store import RunDir
from kvtestbed.results.summary import complete_summary
from kvtestbed.scenarios import Scenario, ScenarioError, check_against, load_scenario, replicas
from kvtestbed.scenarios import agents as agent_control
from kvtestbed.scenarios.observer_figures import ObserverPayload, observer_figures
from kvtestbed.scenarios.wiring import (
    WiringError,
    cluster_target,
    group_views,
    heal_engine_tool_users,
    host_of,
    jetstream_target,
    load_target,
    node_set,
    node_target,
    sentinel_target,
)

# a writer's bounds beyond the planned run (a stop that comes late must not let it write forever)
WRITER_SLACK_S = 60.0
# Sentinels and the killed server settle after the heal before the read-back asks who the primary is
SETTLE_TIMEOUT_S = 60.0
AGENTS_DRAIN_TIMEOUT_S = 90.0  # the agents check waits this long for the agents' counts to become final
AGENTS_POLL_S = 1.5  # above the pipeline aggregator's 1 s poll, so a steady audit is really steady
PROGRESS_EVERY_S = 1.0


class RunInputError(ValueError):
    """Bad input: one line, exit 2, nothing started."""


class Interrupted(Exception):
    """SIGINT or SIGTERM during a run."""


@dataclass
class RunOptions:
    inventory: Path
    results_root: Path
    overrides: tuple[str, ...] = ()
    repeats: int | None = None
    seed: int | None = None
    out: TextIO = sys.stdout
    metrics_port: int = 0  # the run's /metrics for Prometheus (kvt_fault_active, ...); 0 = none


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    summary: dict[str, Any]


def run_file(path: Path, options: RunOptions) -> list[RunOutcome]:
    """Every sweep point and repeat of a scenario file, one after another."""
    try:
        scenarios = load_scenario(path, list(options.overrides))
        inventory = Inventory.load(options.inventory)
        groups, group_vars = group_views(inventory)
        for scenario in scenarios:
            check_against(scenario, groups, group_vars)
    except (ScenarioError, InventoryError) as exc:
        raise RunInputError(str(exc)) from None
    outcomes = []
    for scenario in scenarios:
        for repeat in range(1, (options.repeats or scenario.repeats) + 1):
            run = ScenarioRun(scenario, inventory, options, repeat)
            try:
                outcomes.append(run.execute())
            finally:  # also when the run stops early (a refusal, an error): its SSH masters and their directory go
                run.remotes.close()
    return outcomes


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM behaves as Ctrl-C for the run: the same `finally` heals both."""

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class ScenarioRun:
    def __init__(self, scenario: Scenario, inventory: Inventory, options: RunOptions, repeat: int) -> None:
        self.scenario = scenario
        self.inventory = inventory
        self.options = options
        self.repeat = repeat
        self.secrets_dir = default_secrets_dir(inventory)
        self.remotes = Remotes()
        self.t0 = 0.0
        self.faults: list[tuple[Any, Fault]] = []
        self.fault_ctx: Any = None
        self.detached: list[replicas.Detached] = []  # `replicas:`: the replicas stopped for the whole run
        self.fault_threads: list[threading.Thread] = []
        self.writers: dict[str, Writer] = {}
        self.targets: dict[str, Any] = {}  # writer -> SentinelTarget | ClusterTarget | JetStreamTarget | NodeTarget
        self.node_sets: dict[str, NodeSet] = {}  # group -> its every node, for the read on every node after the heal
        self.group_reads: dict[str, GroupRead] = {}  # one settled read per group, shared by the checks that need it
        self.conflicts: dict[str, Any] = {}  # the conflicts check's figures (summary.json accounting.conflicts)
        self.agents: list[agent_control.AgentHandle] = []
        self.timeline: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.run_dir: RunDir | None = None
        self.load_spec: load_runner.LoadSpec | None = None
        self.load_known: dict[str, str] = {}
        self.load_thread: threading.Thread | None = None
        self.load_result: load_runner.LoadResult | None = None
        self.load_master: load_master.MasterEndpoint | None = None  # load.from: hosts
        self._cut_short = False
        self.load_stop = threading.Event()  # set when the run is cut short: Locust gets SIGTERM
        self.versions: dict[str, str] = {}
        self.benchmark_plan: list[tuple[Any, engine_tools.ToolSpec, Host]] = []  # (entry, spec, tool host)
        self.benchmark_results: dict[str, dict[str, Any]] = {}
        self.benchmark_thread: threading.Thread | None = None
        self.metrics = RunnerMetrics(options.metrics_port, say=self.say)

    # -- the clock -------------------------------------------------------------------------------------
    def clock(self) -> float:
        return time.monotonic() - self.t0

    def event(self, source: str, event: str, detail: dict[str, Any]) -> None:
        self.timeline.append({"t": round(self.clock(), 6), "source": source, "event": event, "detail": detail})

    def say(self, line: str) -> None:
        print(line, file=self.options.out, flush=True)

    # -- preflight: everything that can be refused, before anything starts -------------------------------
    def preflight(self) -> None:
        s = self.scenario
        hosts = {h.name: h for group in s.groups_used() for h in self.inventory.group(group)}
        for host in hosts.values():
            if not self.remotes(host).answers(timeout=10):
                raise RunInputError(f"host {host.name} ({host.address}) does not answer on SSH: is it up?")
        ctx = self.fault_ctx = make_context(self.inventory, self.remotes, clock=self.clock,
                                            primary_of=self.primary_of, seed=self.options.seed,
                                            secrets_dir=self.secrets_dir)
        for index, entry in enumerate(s.faults):
            spec = {"kind": entry.kind, "group": entry.group, "target": entry.target, "for": entry.for_s,
                    "service": entry.service, "params": dict(entry.params)}
            try:
                self.faults.append((entry, make_fault(spec, self.inventory, ctx)))
            except (FaultSpecError, FaultUnsupported) as exc:
                raise RunInputError(f"{s.source}: faults[{index}]: {exc}") from None
        run_tag = f"{int(time.time()) % 10**8:08d}"
        for writer in s.writers:
            try:
                if writer.strategy == "cluster":
                    target: Any = cluster_target(self.inventory, writer.group, self.secrets_dir)
                elif writer.strategy == "jetstream":
                    target = jetstream_target(self.inventory, writer.group, self.secrets_dir, writer.name, run_tag)
                elif writer.strategy == "node":
                    target = node_target(self.inventory, writer.group, str(writer.host), self.secrets_dir)
                    self.node_sets[writer.group] = target.nodes
                else:
                    target = sentinel_target(self.inventory, writer.group, self.secrets_dir)
                self.targets[writer.name] = target
            except (WiringError, AccountingError, InventoryError) as exc:
                raise RunInputError(f"{s.source}: writers {writer.name}: {exc}") from None
        if "conflicts" in s.checks:
            for group, _, _ in s.key_sharing():
                try:
                    self.node_sets.setdefault(group, node_set(self.inventory, group, self.secrets_dir))
                except (WiringError, AccountingError, InventoryError) as exc:
                    raise RunInputError(f"{s.source}: checks conflicts: {exc}") from None
        if s.load is not None:
            self._prepare_load()
        for index, entry in enumerate(s.benchmarks):
            self.benchmark_plan.append(self._prepare_benchmark(index, entry))
        for agent in s.agents:
            try:
                self.agents.append(
                    agent_control.locate(agent.name, agent.host, self.inventory, self._remote_by_name())
                )
            except (agent_control.AgentError, InventoryError, RemoteError) as exc:
                raise RunInputError(f"{s.source}: agents {agent.name}: {exc}") from None

    def _prepare_benchmark(self, index: int, entry: Any) -> tuple[Any, engine_tools.ToolSpec, Host]:
        """An engine tool's run, checked against the inventory now: its group's engine picks the tool, the host
        that runs it answers, the admin secret is there."""
        where = f"{self.scenario.source}: benchmarks[{index}]"
        members = self.inventory.group(entry.group)
        kvstore = members[0].vars.get(f"{entry.group}_kvstore") if members else None
        if not isinstance(kvstore, dict) or not kvstore.get("ports"):
            raise RunInputError(f"{where}.group: {entry.group!r} is no key-value group ({entry.group}_kvstore.ports)")
        if entry.target != "primary" and entry.target not in {h.name for h in members}:
            raise RunInputError(f"{where}.target: host {entry.target!r} is not in group {entry.group!r}")
        if entry.host is not None:
            tool_host = self.inventory.host(entry.host)
        elif "loadgen" in self.inventory.groups and self.inventory.group("loadgen"):
            tool_host = self.inventory.group("loadgen")[0]
        else:
            raise RunInputError(f"{where}.host: name the host that runs the tool (the inventory has no loadgen host)")
        if not self.remotes(tool_host).answers(timeout=10):
            raise RunInputError(f"{where}.host: {tool_host.name} ({tool_host.address}) does not answer on SSH")
        if not (self.secrets_dir / f"{entry.group}-admin").is_file():
            raise RunInputError(f"{where}: secrets file {self.secrets_dir / f'{entry.group}-admin'} is missing "
                                "(the tool's temporary user is made as admin)")  # fmt: skip
        try:
            spec = entry.tool_spec(entry.tool or engine_tools.tool_for_engine(str(kvstore.get("engine") or "redis")))
        except ValueError as exc:
            raise RunInputError(f"{where}: {exc}") from None
        return entry, spec, tool_host

    def _start_benchmarks(self, m0: float) -> None:
        """The engines' tools one after another from the measured phase's start, in a thread of their own."""
        if not self.benchmark_plan:
            return
        end = m0 + self.scenario.duration_s
        self.benchmark_thread = threading.Thread(target=self._run_benchmarks, args=(end,), daemon=True,
                                                 name="benchmarks")  # fmt: skip
        self.benchmark_thread.start()

    def _run_benchmarks(self, end: float) -> None:
        for entry, spec, tool_host in self.benchmark_plan:
            if self.stop.is_set():
                return
            left = end - self.clock()
            if left <= 1:
                self.errors.append(f"benchmark {entry.name}: no time left in the measured phase: lengthen duration")
                return
            members = self.inventory.group(entry.group)
            kvstore = members[0].vars.get(f"{entry.group}_kvstore") or {}
            try:
                target_name = self.primary_of(entry.group) if entry.target == "primary" else entry.target
                target = self.inventory.host(target_name)
                remote = self.remotes(tool_host)
                self.event("runner", "benchmark-started", {"name": entry.name, "tool": spec.tool,
                                                           "target": target.name, "host": tool_host.name})  # fmt: skip
                result = engine_tools.run_engine_tool(
                    replace(spec, timeout_s=min(spec.timeout_s, left)), target.address,
                    int(kvstore["ports"][0]), "admin", self.secrets_dir / f"{entry.group}-admin",
                    lambda command, timeout, remote=remote: remote.run(command, timeout=timeout),
                    tool_host=tool_host.name, tls=bool(target.vars.get("kvstore_tls")),
                )  # fmt: skip
            except (engine_tools.EngineToolError, FaultError, RemoteError, AccountingError, InventoryError) as exc:
                self.errors.append(f"benchmark {entry.name}: {exc}")
                continue
            result["target_host"] = target.name
            self.benchmark_results[entry.name] = result
            self.event("runner", "benchmark-done", {"name": entry.name, "duration_s": result["duration_s"]})

    def _join_benchmarks(self) -> None:
        """Wait for the tools (bounded by their own timeout, the measured phase's end); a run cut short does not."""
        if self.benchmark_thread is not None:
            self.benchmark_thread.join(timeout=1.0 if self._cut_short else None)

    def _prepare_load(self) -> None:
        """The Locust part as a LoadSpec, checked now (class names, profile, target) so bad input starts nothing."""
        s = self.scenario
        load = s.load
        assert load is not None
        try:
            url, password_file, extra = load_target(self.inventory, load.target, self.secrets_dir)
            spec = load_runner.LoadSpec(
                user_classes=list(load.users), target=url, users=load.count, spawn_rate=load.spawn_rate,
                run_time_s=None if load.rate else s.warmup_s + s.duration_s, rate=load.rate,
                processes=load.processes, options={**extra, **{k: str(v) for k, v in load.options.items()}},
                password_file=password_file,
            )  # fmt: skip
            self.load_known = load_runner.available_user_classes()
            load_runner.check(spec, self.load_known)
            if load.origin == "hosts":
                # the master's workers read the secrets from their own copies (locust_password_files)
                self.load_master = load_master.master_of(self.inventory, self.secrets_dir)
                spec = load_master.on_the_hosts(spec, self.inventory, self.secrets_dir)
                load_master.ready_workers(self.load_master)
        except (WiringError, InventoryError, load_runner.LoadInputError, load_master.MasterError) as exc:
            raise RunInputError(f"{s.source}: load: {exc}") from None
        self.load_spec = spec

    def _start_load(self) -> None:
        """Locust headless in a subprocess (kvtestbed.load.runner), from the warm-up's start to its own end."""
        if self.load_spec is None or self.run_dir is None:
            return
        out = self.run_dir.raw_dir / "locust"
        spec, known = self.load_spec, self.load_known

        master = self.load_master

        def run() -> None:
            if master is None:
                self.load_result = load_runner.run(spec, out, known, stop=self.load_stop)
                return
            try:
                self.load_result = load_master.run_on_master(spec, master, out, known, stop=self.load_stop)
            except (load_master.MasterError, load_runner.LoadInputError) as exc:
                self.load_result = load_runner.LoadResult(2, out, [], {}, str(exc))

        self.load_thread = threading.Thread(target=run, name="locust", daemon=True)
        self.load_thread.start()
        self.event("runner", "load-started", {"users": list(spec.user_classes), "count": spec.users,
                                              "from": master.host if master is not None else "controller"})

    def _join_load(self) -> None:
        """Wait for Locust's own end (bounded by the load runner's timeout); a run cut short does not wait."""
        if self.load_thread is None:
            return
        if self._cut_short:
            self.load_stop.set()
        self.load_thread.join()  # bounded: load_runner.run kills Locust at its run time + 120 s
        result = self.load_result
        if result is not None and result.returncode not in (0, 1):
            self.errors.append(f"load: Locust ended with {result.returncode} ({result.message or 'see raw/locust'})")

    def _load_figures(self) -> dict[str, float]:
        """Locust's HDR figures per request name (load.locust.<type name>.<figure>) and its failure count."""
        result = self.load_result
        if result is None:
            return {}
        figures: dict[str, float] = {}
        requests = result.hdr.get("requests") if isinstance(result.hdr, dict) else None
        for name, summary in (requests or {}).items():
            key = str(name).replace(" ", "_")
            figures.update(agent_control.numeric_leaves(summary, f"locust.{key}"))
        failures = sum(int(entry.get("num_failures", 0)) for entry in result.stats if isinstance(entry, dict))
        figures["locust.failures"] = float(failures)
        if result.workers:
            figures["locust.workers"] = float(result.workers)
        figures.update({f"locust.{k}": v for k, v in load_master.workload_figures(result.workload).items()})
        return figures

    def _collect_servers(self, when: str) -> dict[str, str]:
        """INFO of every key-value instance the scenario uses into raw/servers/<host>-<port>-<when>.json; the
        engine version per group. A server that does not answer is noted, not fatal (it may be the one killed)."""
        assert self.run_dir is not None
        versions: dict[str, str] = {}
        for group in self.scenario.groups_used():
            for host in self.inventory.group(group):
                settings = host.vars.get(f"{group}_kvstore")
                if not isinstance(settings, dict):
                    continue
                for port in settings.get("ports") or []:
                    info = server_info(host.address, int(port), self.secrets_dir / f"{group}-agent")
                    path = self.run_dir.servers_raw_dir / f"{host.name}-{port}-{when}.json"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(info, indent=1, sort_keys=True, default=str))
                    version = info.get("valkey_version") or info.get("redis_version")
                    if version and group not in versions:
                        versions[group] = str(version)
        return versions

    def _remote_by_name(self) -> dict[str, Any]:
        return {name: self.remotes(host) for name, host in self.inventory.hosts.items()}

    def primary_of(self, group: str) -> str:
        """The host the Sentinels agree is the primary of `group` now (faults' `primary`/`replica`); groups no
        Sentinel watches go to the faults' own resolvers (ROLE, the JetStream meta leader)."""
        from kvtestbed.faults.targets import builtin_primary

        target = self.targets.get(next((w.name for w in self.scenario.writers if w.group == group), ""))
        if not isinstance(target, SentinelTarget):
            try:
                target = sentinel_target(self.inventory, group, self.secrets_dir)
            except WiringError:
                return builtin_primary(self.inventory, group, self.secrets_dir)
        address = agreed_primary(target, timeout_s=10)
        name = host_of(self.inventory, address)
        if name is None:
            raise FaultError(f"group {group}: the Sentinels name {address}, which is no host of the inventory")
        return name

    # -- the run ---------------------------------------------------------------------------------------
    def execute(self) -> RunOutcome:
        s = self.scenario
        started = datetime.now(UTC)
        self.preflight()
        healed = heal_all(self.inventory, self.remotes)
        if s.benchmarks:
            healed += heal_engine_tool_users(self.inventory, self.secrets_dir, sorted({b.group for b in s.benchmarks}))
        run_dir = self.run_dir = RunDir.create(self.options.results_root, s.name, started)
        run_dir.write_scenario(s.to_yaml())
        self.t0 = time.monotonic()
        t0_unix = time.time()
        for line in healed:
            self.event("runner", "leftover-healed", {"what": line})
        status, error = "passed", None
        phases: dict[str, list[float]] = {}
        try:
            with _signals_raise():
                self.say(f"run {run_dir.id}: {s.name} (repeat {self.repeat}), results in {run_dir.path}")
                if self.metrics.start():
                    self.metrics.run_started(s.name, run_dir.id)
                    self.metrics.enter_phase("warmup")
                    for entry, fault in self.faults:
                        self.metrics.fault_planned(fault.id, fault.kind, entry.group, entry.target)
                self.versions = self._collect_servers("start")
                self._detach_replicas()
                self._start_agents()
                self._start_writers()
                self._start_load()
                self._phase("warm-up", s.warmup_s, phases, "warmup")
                m0 = self.clock()
                self.metrics.enter_phase("measure")
                self._schedule_faults(m0)
                self._start_benchmarks(m0)
                self._phase("measure", s.duration_s, phases, "measure", m0)
        except Interrupted as exc:
            self._cut_short = True
            status, error = "interrupted", f"interrupted by {exc}"
        except (FaultError, FaultUnsupported, RemoteError, AccountingError, agent_control.AgentError) as exc:
            status, error = "failed", str(exc)
        finally:
            self._cut_short = self._cut_short or status != "passed"
            self._join_benchmarks()
            self.stop.set()
            self._stop_writers()
            self._join_load()
            heal_error = self._heal_faults()
            if heal_error and status == "passed":
                status, error = "failed", heal_error
            if status == "passed" and "agents" in s.checks:
                drain_error = self._drain_agents()
                if drain_error:
                    status, error = "failed", f"checks: {drain_error}"
            self._stop_agents()
        self.metrics.enter_phase("checks")
        clients: dict[str, Any] = {}
        servers: list[dict[str, Any]] = []
        self._collect_servers("end")
        if status in ("passed", "failed", "interrupted"):
            try:
                clients, servers = self._account(phases)
            except (AccountingError, OSError) as exc:
                if status == "passed":
                    status, error = "failed", f"checks: {exc}"
        summary = self._summary(started, t0_unix, status, error, phases, clients, servers)
        summary = complete_summary(summary, [dict(slo.__dict__) for slo in s.slo])
        # the dashboards' queries over the run, for the report (never fails the run; the runner's /metrics still up)
        summary["monitoring"] = capture_run(self.inventory, run_dir.path, t0_unix, say=self.say)
        for event in sorted(self.timeline, key=lambda e: e["t"]):
            run_dir.append_timeline(event)
        run_dir.write_summary(summary)
        report = write_report(run_dir)
        self.metrics.stop()
        self.remotes.close()
        self.say(summary_table(summary))
        self.say(f"report: {report}")
        return RunOutcome(run_dir.path, summary["run"]["status"], summary)

    def _phase(self, name: str, seconds: float, phases: dict[str, list[float]], key: str,
               start: float | None = None) -> None:
        begin = self.clock() if start is None else start
        phases[key] = [round(begin, 6), round(begin + seconds, 6)]
        end = begin + seconds
        while (left := end - self.clock()) > 0:
            if self.stop.wait(min(PROGRESS_EVERY_S, left)):
                return
            self._progress(name, end)
            for writer in self.writers.values():
                if not writer.running:
                    raise AccountingError(f"writer {writer.name} stopped before the run's end")

    def _progress(self, phase: str, end: float) -> None:
        counts = " ".join(
            f"{name} ok {w.counts.ok} fail {w.counts.fail} unknown {w.counts.unknown}"
            for name, w in self.writers.items()
        )
        for name, w in self.writers.items():
            self.metrics.writer_counts(name, w.counts.ok, w.counts.fail, w.counts.unknown)
        active = [f.kind for _, f in self.faults if f.injected and not f.healed]
        faults = f" | fault {', '.join(active)}" if active else ""
        self.say(f"  {phase} {self.clock():6.1f} s (ends {end:.0f} s) | {counts}{faults}")

    def _start_agents(self) -> None:
        # "{run_id}" in an agent's config becomes this run's id: agents that account together (the expiry
        # generator's ledger and its consumers) share it, and a run never counts an earlier run's keys
        run_id = self.run_dir.id if self.run_dir is not None else "run"
        configs = {a.name: with_run_id(dict(a.config), run_id) for a in self.scenario.agents}
        for agent in self.agents:
            if configs.get(agent.name):
                agent_control.apply_config(agent, configs[agent.name], self.remotes(agent.host))
            agent_control.start(agent, self.remotes(agent.host))
            self.event("runner", "agent-started", {"agent": agent.name, "host": agent.host.name})

    def _drain_agents(self) -> str | None:
        """The agents check: poll the agents' summaries until their counts are final (accounting.agents); the
        error line when they are not within AGENTS_DRAIN_TIMEOUT_S."""
        kinds = {a.name: a.kind for a in self.scenario.agents}
        deadline = self.clock() + AGENTS_DRAIN_TIMEOUT_S
        previous: dict[str, tuple[str, dict[str, Any]]] | None = None
        self.say(f"  drain: waiting up to {AGENTS_DRAIN_TIMEOUT_S:g} s for the agents' final counts")
        while True:
            current = {}
            for agent in self.agents:
                payload = agent_control.collect(agent)
                current[agent.name] = (kinds.get(agent.name, ""), (payload or {}).get("summary") or {})
            state = drain_state(current, previous)
            if state.drained:
                self.event("runner", "agents-drained", {})
                return None
            if self.clock() > deadline:
                return f"agents did not drain within {AGENTS_DRAIN_TIMEOUT_S:g} s: {'; '.join(state.waiting_for)}"
            previous = current
            time.sleep(AGENTS_POLL_S)  # the pace of polling a condition, bounded by the deadline above

    def _stop_agents(self) -> None:
        assert self.run_dir is not None
        for agent in self.agents:
            payload = agent_control.collect(agent)
            if payload is None:
                # a saturated agent (the listeners sweep's 64 subscriptions in one process) answers nothing: its
                # figures are missing, and the run says so rather than passing on what it could not measure
                self.errors.append(f"agent {agent.name}: no figures: {agent.url}/hdr did not answer within "
                                   f"{agent_control.COLLECT_TIMEOUT_S:g} s (saturated or down)")  # fmt: skip
            else:
                path = self.run_dir.agents_raw_dir / f"{agent.name}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(payload, indent=1, sort_keys=True))
                agent.summary = payload.get("summary") or {}
                agent.histograms = payload.get("histograms") or {}
            for problem in (agent_control.stop(agent, self.remotes(agent.host)),
                            agent_control.remove_config(agent, self.remotes(agent.host))):  # fmt: skip
                if problem:
                    self.errors.append(problem)

    def _start_writers(self) -> None:
        assert self.run_dir is not None
        s = self.scenario
        bound_s = s.warmup_s + s.duration_s + WRITER_SLACK_S
        watched: set[str] = set()
        for spec in s.writers:
            target = self.targets[spec.name]
            if kind_of(target) == "jetstream":
                ensure_stream(target, replicas=min(3, len(self.inventory.group(spec.group))))
            writer = make_writer(
                spec.name, spec.strategy, target, spec.key_prefix, spec.rate,
                OpLog(self.run_dir.ops_path(spec.name)), t0=self.t0,
                max_ops=int(spec.rate * bound_s) + 1, max_duration_s=bound_s,
                watch_servers=spec.group not in watched,  # one watcher of the servers' role changes per group
                keys=spec.keys,
            )  # fmt: skip
            watched.add(spec.group)
            self.writers[spec.name] = writer
            writer.start()
        for group in sorted({w.group for w in s.writers if isinstance(self.targets[w.name], SentinelTarget)}):
            self.event("runner", "primary", {"group": group, "host": self.primary_of(group)})

    def _stop_writers(self) -> None:
        heard: set[str] = set()  # every writer of a group hears the same Sentinels: keep one copy of what they say
        for spec in self.scenario.writers:
            writer = self.writers.get(spec.name)
            if writer is None:
                continue
            writer.stop()
            first = spec.group not in heard
            heard.add(spec.group)
            self.timeline.extend(e for e in writer.events() if first or e.get("source") == spec.name)

    def _schedule_faults(self, m0: float) -> None:
        for entry, fault in self.faults:
            thread = threading.Thread(target=self._fault_life, args=(entry, fault, m0), daemon=True,
                                      name=f"fault-{fault.id}")  # fmt: skip
            self.fault_threads.append(thread)
            thread.start()

    def _fault_life(self, entry: Any, fault: Fault, m0: float) -> None:
        """inject at m0 + at, heal after `for`, verify; errors go to self.errors (the main thread fails the run)."""
        if self.stop.wait(max(m0 + entry.at_s - self.clock(), 0)):
            return
        try:
            fault.inject()
            hosts = [h.name for h in fault.targets]
            self.event("runner", "fault-injected", {"id": fault.id, "kind": fault.kind, "hosts": hosts})
            self.metrics.fault(fault.id, fault.kind, entry.group, entry.target, hosts, active=True)
            if entry.for_s:
                self.stop.wait(max(m0 + entry.at_s + entry.for_s - self.clock(), 0))
            fault.heal()
            self.event("runner", "fault-healed", {"id": fault.id})
            self.metrics.fault(fault.id, fault.kind, entry.group, entry.target, hosts, active=False)
            if not self.stop.is_set() and not fault.verify():
                self.errors.append(fault.error or f"{fault.kind} {fault.id}: not recovered")
        except (FaultError, FaultUnsupported, RemoteError) as exc:
            self.errors.append(str(exc))

    def _detach_replicas(self) -> None:
        """`replicas: {group: N}`: stop the replicas beyond N for the whole run (scenarios/replicas.py)."""
        s = self.scenario
        if not s.replicas:
            return
        # the seed picks the same replicas again; a stream of its own so the scheduled faults' picks do not move
        rng = random.Random(f"replicas-{self.options.seed}") if self.options.seed is not None else random.Random()
        try:
            replicas.detach(self.inventory, s.replicas, self.primary_of, self.fault_ctx,
                            s.warmup_s + s.duration_s, rng, out=self.detached)
        finally:
            for entry in self.detached:
                for fault in entry.faults:
                    if fault.injected:
                        hosts = [h.name for h in fault.targets]
                        self.event("runner", "replicas-detached", {"id": fault.id, "group": entry.group,
                                                                   "hosts": hosts})  # fmt: skip
                        self.metrics.fault(fault.id, fault.kind, entry.group, "replicas", hosts, active=True)
        for entry in self.detached:
            self.say(f"  replicas {entry.group}: {entry.keep} attached to {entry.primary}, stopped for the run: "
                     f"{', '.join(entry.stopped) or 'none'}")

    def _heal_faults(self) -> str | None:
        """Heal every fault still in place (the run ended early or a thread failed), then start the replicas
        `replicas:` stopped; the first error, if any."""
        for thread in self.fault_threads:
            thread.join(timeout=1.0 if self.stop.is_set() else None)
        problems = list(self.errors)
        for entry, fault in self.faults:
            try:
                fault.heal()
            except (FaultError, RemoteError) as exc:
                problems.append(f"heal failed: {exc}")
            if fault.injected and fault.healed:
                self.metrics.fault(fault.id, fault.kind, entry.group, entry.target, [h.name for h in fault.targets],
                                   active=False)
            if self.run_dir is not None and fault.injected:
                self.run_dir.append_fault(fault.record())
        problems += replicas.reattach(self.detached)
        for entry in self.detached:
            for fault in entry.faults:
                if fault.injected:
                    self.event("runner", "replicas-reattached", {"id": fault.id, "group": entry.group})
                    self.metrics.fault(fault.id, fault.kind, entry.group, "replicas", [h.name for h in fault.targets],
                                       active=False)
                    if self.run_dir is not None:
                        self.run_dir.append_fault(fault.record())
        return problems[0] if problems else None

    # -- after the run ---------------------------------------------------------------------------------
    def _account(self, phases: dict[str, list[float]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        assert self.run_dir is not None
        if not self.writers:
            return {}, []
        measure = tuple(phases["measure"]) if "measure" in phases else None
        records = [fault.record() for _, fault in self.faults if fault.injected]
        clients: dict[str, Any] = {}
        switches = servers_failover(self.timeline)
        # writers that share a target are read back together (one stream per JetStream writer: alone); the node
        # writers of a group too, from one read of every node
        by_target: dict[str, list[str]] = {}
        for w in self.scenario.writers:
            target = self.targets[w.name]
            by_target.setdefault(f"nodes:{w.group}" if isinstance(target, NodeTarget) else target.describe(),
                                 []).append(w.name)  # fmt: skip
        all_ops = {w.name: read_ops(self.run_dir.ops_path(w.name)) for w in self.scenario.writers}
        index = value_index(all_ops)  # writers sharing keys see each other's writes in the read-back
        for names in by_target.values():
            target = self.targets[names[0]]
            group = next(w.group for w in self.scenario.writers if w.name == names[0])
            # a writer's failover is timed from the first fault on a host of its own group: a fault elsewhere in the
            # run (a paused agent, another store) is not the one it fails over from
            on_group = faults_on_hosts(records, {h.name for h in self.inventory.group(group)})
            sentinel = isinstance(target, SentinelTarget)
            if sentinel:
                agreed_primary(target, timeout_s=SETTLE_TIMEOUT_S)
            ops = {name: all_ops[name] for name in names}
            strategies = {w.name: w.strategy for w in self.scenario.writers if w.name in names}
            if isinstance(target, NodeTarget):
                read = self._group_read(target.nodes.group, all_ops)
                clients.update(check_run_nodes(ops, {n: self.targets[n] for n in names}, read, measure, on_group,
                                               index))  # fmt: skip
            else:
                clients.update(check_run_any(ops, strategies, target, measure, on_group, timeout_s=SETTLE_TIMEOUT_S,
                                             index=index))  # fmt: skip
            for name in names:
                if on_group and on_group[0].get("t_inject") is not None:
                    both = compare_failover(ops[name], float(on_group[0]["t_inject"]), switches,
                                            kind=kind_of(target))  # fmt: skip
                    clients[name]["failover_vs_servers"] = both
            if sentinel:
                self.event("runner", "primary", {"group": group, "host": self.primary_of(group)})
        if "conflicts" in self.scenario.checks:
            self.conflicts = self._check_conflicts(all_ops)
        return clients, switches

    def _group_read(self, group: str, all_ops: dict[str, list[OpRecord]]) -> GroupRead:
        """Every key the group's writers wrote, on every node of the group once they agree (bounded); read once."""
        if group not in self.group_reads:
            keys = [op.key for w in self.scenario.writers if w.group == group for op in all_ops[w.name]
                    if op.op == "write"]  # fmt: skip
            self.group_reads[group] = read_group(self.node_sets[group], keys, timeout_s=SETTLE_TIMEOUT_S)
        return self.group_reads[group]

    def _check_conflicts(self, all_ops: dict[str, list[OpRecord]]) -> dict[str, Any]:
        """The conflicts check (accounting.conflicts) over each set of writers sharing keys."""
        parts = []
        for group, prefix, names in self.scenario.key_sharing():
            read = self._group_read(group, all_ops)
            part = check_conflicts({name: all_ops[name] for name in names}, read.values)
            part.update(group=group, key_prefix=prefix, writers=list(names), nodes=read.nodes,
                        converged=read.converged, settle_s=read.settle_s)  # fmt: skip
            parts.append(part)
            self.event("runner", "conflicts-checked", {"group": group, "keys": part["keys"],
                                                       "diverged": part["diverged"], "converged": read.converged})
        return merge_conflicts(parts)

    def _summary(self, started: datetime, t0_unix: float, status: str, error: str | None,
                 phases: dict[str, list[float]], clients: dict[str, Any],
                 servers: list[dict[str, Any]]) -> dict[str, Any]:
        s = self.scenario
        if error is None and self.errors:
            status, error = "failed", self.errors[0]
        ended = datetime.now(UTC)
        load: dict[str, float] = self._load_figures()
        for agent in self.agents:
            load.update(agent_control.numeric_leaves(agent.summary, f"agents.{agent.name}"))
        kinds = {a.name: a.kind for a in s.agents}
        changes = {a.name: a.config for a in s.agents}
        load.update(observer_figures(
            ObserverPayload(a.summary, a.histograms, agent_control.merged(a.deployed, changes.get(a.name) or {}))
            for a in self.agents if kinds.get(a.name) == "observer" and a.summary
        ))
        accounting = (account_agents({a.name: (kinds.get(a.name, ""), a.summary) for a in self.agents})
                      if "agents" in s.checks else {})  # fmt: skip
        if self.conflicts:
            accounting["conflicts"] = self.conflicts
        hosts = {}
        for name in sorted({h.name for g in s.groups_used() for h in self.inventory.group(g)}):
            host = self.inventory.host(name)
            hosts[name] = {"address": host.address, "profile": host.vars.get("lab_profile"),
                           "arch": host.vars.get("ansible_architecture"), "groups": list(host.groups)}  # fmt: skip
        engines = {}
        for group in s.groups_used():
            members = self.inventory.group(group)
            kv = members[0].vars.get(f"{group}_kvstore") if members else None
            if isinstance(kv, dict):
                engines[group] = {"engine": kv.get("engine"), "version": self.versions.get(group),
                                  "topology": kv.get("topology")}
                detached = next((d for d in self.detached if d.group == group), None)
                if detached is not None:
                    engines[group].update(detached.describe())
        return {
            "schema": 1,
            "run": {"id": self.run_dir.id if self.run_dir else "", "scenario": s.name, "description": s.description,
                    "tags": list(s.tags), "repeat": self.repeat, "started": started.isoformat(),
                    "ended": ended.isoformat(), "t0_unix": t0_unix, "duration_s": round(self.clock(), 3),
                    "status": status, "error": error, "overrides": dict(s.overrides)},
            "inventory": {"hosts": hosts},
            "engines": engines,
            "phases": phases,
            "faults": [fault.record() for _, fault in self.faults if fault.injected],
            "clients": clients,
            "servers_failover": servers,
            "accounting": accounting,
            "benchmarks": self.benchmark_results,
            "load": load,
            "slo": [],
            "figures": {},
        }  # fmt: skip


def with_run_id(value: Any, run_id: str) -> Any:
    """Every "{run_id}" in the strings of a nested config replaced by run_id."""
    if isinstance(value, dict):
        return {key: with_run_id(item, run_id) for key, item in value.items()}
    if isinstance(value, list):
        return [with_run_id(item, run_id) for item in value]
    return value.replace("{run_id}", run_id) if isinstance(value, str) else value


def server_info(address: str, port: int, password_file: Path) -> dict[str, Any]:
    """INFO of one instance as the data user; {"error": ...} when it does not answer."""
    import redis

    try:
        password = password_file.read_text().strip() if password_file.is_file() else None
        with redis.Redis(address, port, username="agent" if password else None, password=password,
                         socket_timeout=2, socket_connect_timeout=2) as client:  # fmt: skip
            return dict(client.info())
    except (redis.RedisError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}


def summary_table(summary: dict[str, Any]) -> str:
    """The end of a run in a few lines: status, per client the figures users ask for, the SLOs."""
    run = summary["run"]
    lines = [f"{run['scenario']}: {run['status']}" + (f" ({run['error']})" if run.get("error") else "")]
    header = f"  {'client':<20} {'strategy':<9} {'ok':>7} {'fail':>6} {'unknown':>7} {'lost':>6} " \
             f"{'unavail s':>9} {'failover s':>10} {'p99 us':>8}"
    if summary.get("clients"):
        lines.append(header)
    for name, c in summary.get("clients", {}).items():
        failover = "-" if c.get("failover_s") is None else f"{c['failover_s']:.2f}"
        p99 = (c.get("latency_us") or {}).get("p99")
        lines.append(f"  {name:<20} {c.get('strategy', ''):<9} {c['ok']:>7} {c['fail']:>6} {c['unknown']:>7} "
                     f"{c['lost']:>6} {c['unavailability_s']:>9.2f} {failover:>10} {p99 if p99 else '-':>8}")
    conflicts = (summary.get("accounting") or {}).get("conflicts")
    if conflicts:
        lines.append(f"  conflicts: {conflicts['keys']} shared keys, {conflicts['diverged']} diverged, newest won "
                     f"{conflicts['newest_won']}, older won {conflicts['older_won']} ({conflicts['lost']} newer "
                     f"writes lost), unknown final {conflicts['unknown_final']}")  # fmt: skip
    for slo in summary.get("slo", []):
        value = "n/a" if slo.get("value") is None else f"{slo['value']:g}"
        mark = "ok" if slo["ok"] else "VIOLATED"
        lines.append(f"  SLO {slo['figure']} {slo['op']} {slo['threshold']:g}: {value} {mark}")
    return "\n".join(lines)


def exit_code(outcomes: list[RunOutcome]) -> int:
    return 0 if outcomes and all(o.status == "passed" for o in outcomes) else 1

