"""`kvagent <kind> --config FILE` (also `kvtestbed agent ...` on the controller): load, build, check and run one agent.

Each kind lives in its own module exposing ``CONFIG_MODEL`` (a dataclass) and ``build(config) -> AgentBase``.
Modules are imported lazily so one broken or heavy agent does not slow the others' start.
Bad input ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from kvagent.clients.connect import ConnectError
from kvagent.service.config import ConfigError, load_config

AGENT_KINDS: dict[str, str] = {
    "observer": "kvagent.workloads.observer.agent:build",
    "expiry": "kvagent.workloads.expiry.agent:build",
    "streams": "kvagent.workloads.streams.agent:build",
    "pipeline": "kvagent.workloads.pipeline.agent:build",
    "hotkeys": "kvagent.workloads.hotkeys.agent:build",
}

EXIT_BAD_INPUT = 2


class UnknownKindError(Exception):
    pass


def resolve_kind(kind: str) -> tuple[type[Any], Any]:
    """(CONFIG_MODEL, factory) for a kind; UnknownKindError when unknown or not installed."""
    target = AGENT_KINDS.get(kind)
    if target is None:
        raise UnknownKindError(f"unknown agent kind {kind!r} (known: {', '.join(sorted(AGENT_KINDS))})")
    module_name, _, factory_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # a missing dependency inside the module is a real bug, show it
        raise UnknownKindError(
            f"agent kind {kind!r} is not available in this build ({module_name})"
        ) from None
    return module.CONFIG_MODEL, getattr(module, factory_name)


def agent_main(kind: str, config_path: str) -> int:
    from kvagent.service.shell import run_agent

    prefix = f"kvagent {kind}"
    try:
        model, factory = resolve_kind(kind)
        config = load_config(config_path, model)
        agent = factory(config)
        return run_agent(agent, config.service)
    except (ConfigError, ConnectError, UnknownKindError) as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvagent", description="run one kvtestbed workload agent")
    parser.add_argument("kind", help=f"one of: {', '.join(sorted(AGENT_KINDS))}")
    parser.add_argument("--config", required=True, help="YAML configuration file")
    args = parser.parse_args(argv)
    return agent_main(args.kind, args.config)


if __name__ == "__main__":
    sys.exit(main())
