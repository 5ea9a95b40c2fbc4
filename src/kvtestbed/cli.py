"""The `kvtestbed` command: lab up|down|status, deploy, agent, load list|run, run, report, fault, heal, urls.

Failures end in one line, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kvtestbed.deploy.playbook import run_playbook
from kvtestbed.inventory import Inventory, InventoryError
from kvtestbed.lab.status import STATE_DIR, format_table, lab_status
from kvtestbed.project import ProjectError, ansible_bin, project_root, resolve_inventory

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
DEFAULT_RUNNER_METRICS_PORT = 9470  # kvtestbed.monitoring.runner_metrics.DEFAULT_PORT, without importing prometheus


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise CliError(f"{what} needs root (it creates a bridge, nftables rules and containers): run it as root")


def _inventory_vars(inventory: Path) -> dict:
    """Variables every lab host shares (lab_name, lab_state_dir), as Ansible resolves them."""
    try:
        proc = subprocess.run([ansible_bin("ansible-inventory"), "-i", str(inventory), "--list"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CliError(f"cannot read inventory {inventory}: {exc}") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise CliError(f"inventory {inventory} does not parse: {lines[-1] if lines else 'unknown error'}")
    hostvars = json.loads(proc.stdout).get("_meta", {}).get("hostvars", {})
    return next(iter(hostvars.values()), {})


def _playbook(args: argparse.Namespace, playbook: str, extra: dict[str, object] | None = None,
              strategy_env: dict[str, str] | None = None) -> int:
    root = project_root()
    inventory = resolve_inventory(root, args.inventory)
    outcome = run_playbook(root, playbook, inventory, extra_vars=extra, limit=getattr(args, "limit", None),
                           tags=getattr(args, "tags", None), verbose=args.verbose, strategy_env=strategy_env)
    if outcome.error:
        raise CliError(outcome.error, EXIT_BAD_INPUT if outcome.input_error else EXIT_FAILED)
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    if args.action == "status":
        return cmd_lab_status(args)
    _require_root(f"kvtestbed lab {args.action}")
    extra: dict[str, object] = {"lab_state": args.action}
    if args.action == "down" and args.purge:
        extra["lab_purge_images"] = True
    code = _playbook(args, "lab.yml", extra)
    if args.action == "up":
        cmd_lab_status(args)
    return code


def cmd_lab_status(args: argparse.Namespace) -> int:
    root = project_root()
    hostvars = _inventory_vars(resolve_inventory(root, args.inventory))
    lab_name = hostvars.get("lab_name", "default")
    state_dir = Path(hostvars.get("lab_state_dir", STATE_DIR))
    status, hosts = lab_status(lab_name, state_dir)
    if not status:
        print(f"lab {lab_name}: down (no status in {state_dir / lab_name}); start it with: kvtestbed lab up")
        return 3
    print(f"lab {lab_name}: bridge {status['bridge']} {status['subnet']}, gateway {status['gateway']}")
    print(format_table(hosts))
    for item in status.get("unsupported", []):
        print(f"not emulated: {item}")
    return 0 if all(h.state == "running" and h.ssh_ok for h in hosts) else 1


def _strategy_env(requested: str | None, inventory: Inventory | None) -> dict[str, str]:
    """ansible-playbook's environment for the deploy's strategy (kvtestbed/deploy/strategy.py); one line when the
    default gives way."""
    from kvtestbed.deploy import strategy

    hosts = inventory.hosts.values() if inventory else []
    chosen, why = strategy.choose(requested, [str(h.vars.get("ansible_connection") or "") for h in hosts])
    if why:
        print(why)
    try:
        return strategy.strategy_env(chosen)
    except strategy.StrategyError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None


def cmd_deploy(args: argparse.Namespace) -> int:
    """site.yml (or --playbook); a whole deploy whose inputs and hosts are as the last one left them is skipped."""
    from kvtestbed.deploy.strategy import STRATEGIES

    if args.strategy is not None and args.strategy not in STRATEGIES:
        raise CliError(f"strategy {args.strategy!r}: not one of {', '.join(STRATEGIES)}", EXIT_BAD_INPUT)
    root = project_root()
    inventory_path = resolve_inventory(root, args.inventory)
    whole_site = args.playbook == "site.yml" and not (args.limit or args.tags)
    inventory: Inventory | None
    try:
        inventory = Inventory.load(inventory_path)
    except InventoryError as exc:
        if whole_site:
            raise CliError(str(exc), EXIT_BAD_INPUT) from None
        inventory = None  # the playbook's own preflight names what is wrong with it
    with_strategy = _strategy_env(args.strategy, inventory)
    if not whole_site or inventory is None:
        return _playbook(args, args.playbook, strategy_env=with_strategy)
    from kvtestbed.deploy import fingerprint
    from kvtestbed.faults.registry import default_secrets_dir

    digest = fingerprint.compute(root, inventory_path, default_secrets_dir(inventory), {"playbook": args.playbook})
    if not args.force:
        env = dict(os.environ, ANSIBLE_CONFIG=str(root / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
        state = fingerprint.hosts_state(root, inventory_path, digest, env)
        if state.unchanged:
            print(f"deploy: nothing to do, inputs unchanged since the last deploy ({state.reason}); "
                  "--force converges anyway")
            return 0
        print(f"deploy: converging: {state.reason}")
    code = _playbook(args, args.playbook, {"kvtestbed_deploy_fingerprint": digest}, strategy_env=with_strategy)
    after = fingerprint.compute(root, inventory_path, default_secrets_dir(inventory), {"playbook": args.playbook})
    if after != digest:
        # the deploy changed one of its own inputs (a first deploy generates secrets/) and the hosts hold what it
        # applied: record that, or the next deploy of these inputs would converge once more for nothing
        print("deploy: recording the inputs as this deploy left them (it generated secrets)")
        _playbook(args, "fingerprint.yml", {"kvtestbed_deploy_fingerprint": after}, strategy_env=with_strategy)
    return code


def cmd_agent(args: argparse.Namespace) -> int:
    # the agents are a package of their own (agents/, installed by `make install`); hosts run `kvagent`
    try:
        from kvagent.main import agent_main
    except ModuleNotFoundError as exc:
        if exc.name != "kvagent":
            raise
        raise CliError("the agents package is not installed here: make install (pip install -e ./agents)") from None
    return agent_main(args.kind, args.config)


def _duration_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (30, 30s, 5m)") from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 for none)")
    return port


def cmd_load(args: argparse.Namespace) -> int:
    from kvtestbed.load.runner import LoadInputError, LoadSpec, available_user_classes, run

    try:
        known = available_user_classes()
        if args.action == "list":
            for name, doc in known.items():
                print(f"{name:24} {doc}")
            return 0
        options = {}
        for item in args.option or []:
            key, eq, value = item.partition("=")
            if not eq:
                raise LoadInputError(f"--option {item!r}: give NAME=VALUE, e.g. --option keys=1000")
            options[key] = value
        spec = LoadSpec(
            user_classes=args.user_classes,
            target=args.target or "",
            users=args.users,
            spawn_rate=args.spawn_rate,
            run_time_s=args.run_time,
            rate=args.rate or "",
            processes=args.processes,
            options=options,
            password_file=args.password_file or "",
            tls_ca=args.tls_ca or "",
        )
        if not spec.target:
            raise LoadInputError("--target: give the URL to load, e.g. redis://127.0.0.1:6379")
        out = Path(args.out) if args.out else Path("results/load") / (
            time.strftime("%Y%m%d-%H%M%S") + "-" + "-".join(args.user_classes)
        )
        result = run(spec, out, known)
    except LoadInputError as exc:
        raise CliError(str(exc)) from None
    if result.returncode != 0:
        message = result.message or f"locust exited with {result.returncode} (see {out}/locust.log)"
        raise CliError(message.removeprefix("kvload: "), result.returncode)
    print(format_load_summary(result.hdr, result.stats))
    print(f"results: {result.out_dir}")
    return 0


def format_load_summary(hdr: dict, stats: list) -> str:
    rows = [f"{'request':28} {'count':>10} {'fail':>6} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9} {'max us':>9}"]
    failures = {f"{s['method']} {s['name']}": s["num_failures"] for s in stats}
    for key, h in (hdr.get("requests") or {}).items():
        rows.append(
            f"{key:28} {h.get('count', 0):>10} {failures.get(key, 0):>6} {h.get('p50_us', '-'):>9} "
            f"{h.get('p99_us', '-'):>9} {h.get('p99.9_us', '-'):>9} {h.get('max_us', '-'):>9}"
        )
    return "\n".join(rows)


def _fault_inventory(args: argparse.Namespace):
    try:
        return Inventory.load(resolve_inventory(project_root(), args.inventory))
    except InventoryError as exc:
        raise CliError(str(exc)) from None


def cmd_heal(args: argparse.Namespace) -> int:
    from kvtestbed.faults.heal import failed, heal_all
    from kvtestbed.faults.registry import default_secrets_dir
    from kvtestbed.scenarios.wiring import heal_engine_tool_users

    inventory = _fault_inventory(args)
    lines = heal_all(inventory)
    # the engine tools' throwaway ACL users a killed runner left on the instances
    lines += heal_engine_tool_users(inventory, default_secrets_dir(inventory))
    for line in lines:
        print(line)
    if not lines:
        print(f"nothing to heal on {len(inventory.hosts)} host(s)")
    bad = failed(lines)
    if bad:
        raise CliError(f"{len(bad)} host(s) not healed: {bad[0]}", EXIT_FAILED)
    return 0


def _fault_params(items: list[str] | None) -> dict[str, object]:
    import yaml

    params: dict[str, object] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CliError(f"--param {item!r}: give NAME=VALUE, e.g. --param shape=isolate")
        # YAML scalars, as in a scenario file: 10 is a number, 1mbit a string
        params[key] = yaml.safe_load(value) if value else ""
    return params


def cmd_fault(args: argparse.Namespace) -> int:
    """Inject one fault, hold it for --for seconds, heal, verify; one JSON record. Ctrl-C heals first."""
    from kvtestbed.faults import FaultError, FaultSpecError, FaultUnsupported, make_context, make_fault
    from kvtestbed.remote import Remotes

    inventory = _fault_inventory(args)
    spec = {"kind": args.kind, "group": args.group, "target": args.target, "for": args.for_s,
            "service": args.service, "params": _fault_params(args.param)}
    if args.id:
        spec["id"] = args.id
    with Remotes() as remotes:
        context = make_context(inventory, remotes=remotes, grace_s=args.grace)
        try:
            fault = make_fault(spec, inventory, context)
        except FaultSpecError as exc:
            raise CliError(str(exc)) from None
        code = 0
        try:
            fault.inject()
            if args.for_s:
                # the fault's duration is the point of the command: wait for it (Ctrl-C ends it early)
                time.sleep(args.for_s)
        except (FaultUnsupported, FaultSpecError) as exc:
            raise CliError(str(exc)) from None
        except FaultError:
            code = EXIT_FAILED
        except KeyboardInterrupt:
            fault.error = fault.error or "interrupted"
            code = 130
        finally:
            try:
                fault.heal()
            except FaultError:
                code = EXIT_FAILED
        if fault.injected and code != EXIT_FAILED and not fault.verify():
            code = EXIT_FAILED
        print(json.dumps(fault.record()))
        if code == EXIT_FAILED:
            print(f"kvtestbed fault: {fault.error}", file=sys.stderr)
        return code


def cmd_run(args: argparse.Namespace) -> int:
    """A scenario file: every sweep point and repeat, each into results/<time>-<name>/ with its report."""
    from kvtestbed.scenarios.runner import RunInputError, RunOptions, exit_code, run_file

    root = project_root()
    options = RunOptions(inventory=resolve_inventory(root, args.inventory),
                         results_root=Path(args.results) if args.results else root / "results",
                         overrides=tuple(args.set or ()), repeats=args.repeat, seed=args.seed,
                         metrics_port=args.metrics_port)  # fmt: skip
    try:
        outcomes = run_file(Path(args.scenario), options)
    except RunInputError as exc:
        raise CliError(str(exc)) from None
    if len(outcomes) > 1:
        _compare_runs([outcome.run_dir for outcome in outcomes])
    return exit_code(outcomes)


def _compare_runs(run_dirs: list[Path]) -> None:
    """A sweep or repeats: the runs side by side, as `kvtestbed report RUN RUN...` would write them."""
    from kvtestbed.report import ReportError, compare, format_table, main_report

    try:
        page = main_report(run_dirs, None)
        print(format_table(compare(run_dirs)))
    except ReportError as exc:
        print(f"comparison not written: {exc}", file=sys.stderr)
        return
    print(f"comparison: {page}")


def cmd_report(args: argparse.Namespace) -> int:
    """One run: (re)write its report.html. Several: a comparison page, and the table on the terminal."""
    from kvtestbed.report import ReportError, compare, format_table, main_report

    paths = [Path(p) for p in args.runs]
    try:
        page = main_report(paths, Path(args.out) if args.out else None)
        if len(paths) > 1:
            print(format_table(compare(paths)))
    except ReportError as exc:
        raise CliError(str(exc)) from None
    print(f"report: {page}")
    return 0


def cmd_urls(args: argparse.Namespace) -> int:
    """Prometheus, Locust and Grafana: URL and login (never a password), with --check whether each answers."""
    from kvtestbed.faults.registry import default_secrets_dir
    from kvtestbed.monitoring.urls import format_lines, probe_all, service_urls

    inventory = _fault_inventory(args)
    root = project_root()
    secrets_dir = default_secrets_dir(inventory)
    if "{{" in str(secrets_dir):  # a testbed_secrets_dir only Ansible can render: the checkout's, as the roles' default
        secrets_dir = root / "secrets"
    listing = service_urls(inventory, secrets_dir, root)
    states = probe_all(listing.endpoints) if args.check else None
    for line in format_lines(listing, states):
        print(line)
    return EXIT_FAILED if states and any(state.startswith("down") for state in states) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvtestbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_inventory(p: argparse.ArgumentParser) -> None:
        p.add_argument("--inventory", "-i", default="inventory/lab", help="inventory path (default: the lab)")
        p.add_argument("--verbose", "-v", action="store_true", help="Ansible's full output")

    lab = sub.add_parser("lab", help="emulated Pi/PC hosts on this machine")
    lab.add_argument("action", choices=["up", "down", "status"])
    lab.add_argument("--purge", action="store_true", help="with down: also delete the cached base image")
    with_inventory(lab)
    lab.set_defaults(func=cmd_lab)

    deploy = sub.add_parser("deploy", help="run playbooks/site.yml (or --playbook) on an inventory")
    with_inventory(deploy)
    deploy.add_argument("--playbook", default="site.yml", help="a playbook in playbooks/ (default site.yml)")
    deploy.add_argument("--limit", help="only these hosts or groups")
    deploy.add_argument("--tags", help="only these tags")
    deploy.add_argument("--force", action="store_true",
                        help="converge even when nothing changed since the last deploy")
    deploy.add_argument("--strategy", metavar="{mitogen_linear,linear}",
                        help="Ansible strategy: Mitogen's (the default, one Python per host: ~1/3 less time; "
                             "linear when the inventory has ansible_connection: local hosts) or Ansible's own "
                             "linear")
    deploy.set_defaults(func=cmd_deploy)

    agent = sub.add_parser("agent", help="run one workload agent")
    agent.add_argument("kind", help="observer, expiry, streams, pipeline or hotkeys")
    agent.add_argument("--config", required=True, help="the agent's YAML config")
    agent.set_defaults(func=cmd_agent)

    load = sub.add_parser("load", help="run kvload's Locust users headless (docs/load.md)")
    load.add_argument("action", choices=["list", "run"])
    load.add_argument("user_classes", nargs="*", metavar="USER_CLASS", help="with run: user classes (see load list)")
    load.add_argument("--target", help="URL to load: redis://, rediss://, redis+sentinel://, redis+cluster://, nats://")
    load.add_argument("--users", "-u", type=int, default=10, help="users (default 10)")
    load.add_argument("--spawn-rate", "-r", type=float, help="users started per second (default: all at once)")
    load.add_argument("--run-time", "-t", type=_duration_s, help="length, e.g. 30s (default: the --rate profile's)")
    load.add_argument("--rate", help="open-loop rate profile, e.g. constant:rate=5000,for=60 (docs/load.md)")
    load.add_argument("--processes", type=int, default=1, help="Locust worker processes on this machine")
    load.add_argument("--option", "-o", action="append", metavar="NAME=VALUE", help="a kvload option, e.g. keys=1000")
    load.add_argument("--password-file", help="file with the target's password (never on the command line)")
    load.add_argument("--tls-ca", help="CA file for TLS targets")
    load.add_argument("--out", help="results folder (default results/load/<time>-<classes>)")
    load.set_defaults(func=cmd_load)

    run = sub.add_parser("run", help="run a scenario: load, faults, accounting, results and report (scenarios/)")
    run.add_argument("scenario", help="a scenario file, e.g. scenarios/demo.yml")
    run.add_argument("--inventory", "-i", default="inventory/lab", help="inventory path (default: the lab)")
    run.add_argument("--set", action="append", metavar="PATH=VALUE",
                     help="override a field of the file, e.g. --set duration=2m --set faults.0.for=20")
    run.add_argument("--repeat", type=int, help="repeats of each run (default: the file's `repeats`)")
    run.add_argument("--results", help="results root (default results/)")
    run.add_argument("--seed", type=int, help="seed for random targets (one, minority, replica)")
    run.add_argument("--metrics-port", type=_port, default=DEFAULT_RUNNER_METRICS_PORT,
                     help=f"serve the run's Prometheus metrics here (kvt_fault_active...; default "
                          f"{DEFAULT_RUNNER_METRICS_PORT}, 0 for none)")  # fmt: skip
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="rewrite a run's report.html, or compare runs side by side")
    report.add_argument("runs", nargs="+", help="results folders (one: its report; several: a comparison)")
    report.add_argument("--out", help="where to write the page (default: in the run, or beside the first run)")
    report.set_defaults(func=cmd_report)

    heal = sub.add_parser("heal", help="undo every fault a runner left on the inventory's hosts (docs/faults.md)")
    heal.add_argument("--inventory", "-i", default="inventory/lab", help="inventory path (default: the lab)")
    heal.set_defaults(func=cmd_heal)

    fault = sub.add_parser("fault", help="inject one fault, hold it, heal, verify; prints one JSON record")
    fault.add_argument("kind", help="kill, stop, pause, partition, shape, netem, reboot or clock")
    fault.add_argument("--group", required=True, help="inventory group the target is resolved in")
    fault.add_argument("--target", required=True, help="primary, replica, one, minority, majority, all or a host")
    fault.add_argument("--for", dest="for_s", type=_duration_s, help="seconds until heal, e.g. 15s")
    fault.add_argument("--service", help="kv, sentinel, nats, agent:<name> or a unit (process faults)")
    fault.add_argument("--param", action="append", metavar="NAME=VALUE", help="a kind's param, e.g. shape=isolate")
    fault.add_argument("--id", help="the fault's id (default: <kind>-<random>)")
    fault.add_argument("--grace", type=_duration_s, default=10.0,
                       help="the dead-man heals this long after --for (default 10s)")
    fault.add_argument("--inventory", "-i", default="inventory/lab", help="inventory path (default: the lab)")
    fault.set_defaults(func=cmd_fault)

    urls = sub.add_parser("urls", help="Prometheus, Locust and Grafana: URLs and how to log in (docs/monitoring.md)")
    urls.add_argument("--inventory", "-i", default="inventory/lab", help="inventory path (default: the lab)")
    urls.add_argument("--check", action="store_true", help="ask each URL and say up or down (exit 1 if one is down)")
    urls.set_defaults(func=cmd_urls)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prefix = f"kvtestbed {args.command}" + (f" {args.action}" if args.command == "lab" else "")
    try:
        return args.func(args)
    except (CliError, ProjectError) as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return getattr(exc, "code", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
