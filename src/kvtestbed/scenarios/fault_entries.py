"""The `faults:` entries of a scenario file (the format is shared with kvtestbed.faults; docs in
scenarios/README.md): each entry checked on its own, then the schedule as a whole (inside the run, no two faults
at once on one target)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kvtestbed.scenarios import schema
from kvtestbed.scenarios.errors import FieldError
from kvtestbed.scenarios.values import FieldPath, check_keys, choice, mapping, seconds, sequence, text

_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GROUP = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_STREAM = re.compile(r"^[A-Za-z0-9_-]+$")
_UNIT = re.compile(r"^[A-Za-z0-9:_.@\\-]+\.service$")
_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$", re.IGNORECASE)  # tc(8) rates
_SIZE = re.compile(r"^\d+(\.\d+)?(b|k|kb|m|mb|kbit|mbit)?$", re.IGNORECASE)  # tc(8) sizes
_TC_TIME = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")
_PERCENT = re.compile(r"^(\d+(\.\d+)?)%$")
_STEP = re.compile(r"^[+-]\s*\S+$")


@dataclass(frozen=True)
class Fault:
    """One scheduled fault. Times are seconds after the measured phase starts (warm-up excluded)."""

    kind: str  # one of schema.FAULT_KINDS
    group: str  # inventory group the target is resolved in
    target: str  # primary | replica | one | minority | majority | all | a host name of `group`
    at_s: float
    for_s: float | None  # time until heal; None only for kill and reboot (then: verify recovery right away)
    service: str | None  # kv | sentinel | nats | agent:<name> | <unit>.service; None = the group's default
    params: dict[str, Any] = field(default_factory=dict)  # the kind's parameters, defaults filled in

    @property
    def end_s(self) -> float:
        return self.at_s + (self.for_s or 0.0)

    @property
    def label(self) -> str:
        return f"{self.kind} of {self.group}/{self.target}"


def parse_faults(raw: Any, duration_s: float) -> tuple[Fault, ...]:
    faults = tuple(parse_fault(entry, ("faults", i), duration_s) for i, entry in enumerate(sequence(raw, ("faults",))))
    _check_overlaps(faults)
    return faults


def parse_fault(raw: Any, path: FieldPath, duration_s: float) -> Fault:
    entry = mapping(raw, path)
    check_keys(entry, schema.FAULT_FIELDS, path)
    kind = choice(entry.get("kind"), (*path, "kind"), schema.FAULT_KINDS, "fault kind")
    group = text(entry.get("group"), (*path, "group"))
    if not _GROUP.match(group):
        raise FieldError((*path, "group"), f"{group!r} is not an inventory group name")
    target = text(entry.get("target"), (*path, "target"))
    leader = schema.STREAM_LEADER_TARGET
    stream = target.removeprefix(leader) if target.startswith(leader) else None
    if stream is not None and not _STREAM.match(stream):
        raise FieldError((*path, "target"), f"{target!r}: name a JetStream stream after '{leader}' (A-Z a-z 0-9 - _)")
    if stream is None and target not in schema.FAULT_TARGETS and not _HOST.match(target):
        raise FieldError((*path, "target"), f"{target!r}: give {', '.join(schema.FAULT_TARGETS)}, "
                                            f"{schema.STREAM_LEADER_TARGET}<stream> or a host name")
    at_s = _at(entry, path, duration_s)
    for_s = _for(entry, path, kind, at_s, duration_s)
    service = _service(entry, path, kind)
    params = _params(entry.get("params"), (*path, "params"), kind, target)
    return Fault(kind, group, target, at_s, for_s, service, params)


def _at(entry: dict[str, Any], path: FieldPath, duration_s: float) -> float:
    if entry.get("at") is None:
        raise FieldError((*path, "at"), "required: seconds after the measured phase starts")
    at_s = seconds(entry["at"], (*path, "at"))
    if at_s < 0:
        raise FieldError((*path, "at"), f"{at_s:g} s is negative")
    if at_s >= duration_s:
        raise FieldError((*path, "at"), f"{at_s:g} s is not before the run's end at {duration_s:g} s (duration)")
    return at_s


def _for(entry: dict[str, Any], path: FieldPath, kind: str, at_s: float, duration_s: float) -> float | None:
    if entry.get("for") is None:
        if kind in schema.FAULT_KINDS_NEED_FOR:
            raise FieldError((*path, "for"), f"required for {kind}: seconds until the fault is healed")
        return None
    for_s = seconds(entry["for"], (*path, "for"))
    if for_s <= 0:
        raise FieldError((*path, "for"), f"{for_s:g} s: must be > 0")
    if at_s + for_s > duration_s:
        raise FieldError(
            (*path, "for"),
            f"the {kind} ends at {at_s + for_s:g} s (at {at_s:g} + for {for_s:g}), after the run's end at "
            f"{duration_s:g} s (duration): shorten it or lengthen duration",
        )
    return for_s


def _service(entry: dict[str, Any], path: FieldPath, kind: str) -> str | None:
    if entry.get("service") is None:
        return None
    service = text(entry["service"], (*path, "service"))
    if kind in schema.FAULT_KINDS_WITHOUT_SERVICE:
        raise FieldError((*path, "service"), f"not used by {kind} (it acts on hosts): remove it")
    agent = service.removeprefix("agent:")
    if service in schema.FAULT_SERVICES or (agent != service and agent) or _UNIT.match(service):
        return service
    raise FieldError((*path, "service"),
                     f"unknown service {service!r} ({', '.join(schema.FAULT_SERVICES)}, agent:<name>, <unit>.service)")


def _params(raw: Any, path: FieldPath, kind: str, target: str) -> dict[str, Any]:
    params = dict(mapping(raw, path))
    known = schema.FAULT_PARAMS[kind]
    for key in params:
        if key not in known:
            hint = f"{kind} takes {', '.join(known)}" if known else f"{kind} takes none"
            raise FieldError((*path, str(key)), f"unknown parameter ({hint})")
    return _PARAM_CHECKS[kind](params, path, target)


def _no_params(params: dict[str, Any], path: FieldPath, target: str) -> dict[str, Any]:
    return params


def _kill(params: dict[str, Any], path: FieldPath, target: str) -> dict[str, Any]:
    signal = str(params.get("signal", "KILL")).strip().upper().removeprefix("SIG")
    if signal not in schema.SIGNALS:
        raise FieldError((*path, "signal"), f"unknown signal {params['signal']!r} ({', '.join(schema.SIGNALS)})")
    return {**params, "signal": signal}


def _partition(params: dict[str, Any], path: FieldPath, target: str) -> dict[str, Any]:
    shape = choice(params.get("shape", "isolate"), (*path, "shape"), schema.PARTITION_SHAPES, "partition shape")
    result: dict[str, Any] = {**params, "shape": shape}
    if shape == "one-way":
        result["direction"] = choice(params.get("direction"), (*path, "direction"), schema.PARTITION_DIRECTIONS,
                                     "direction")
    elif "direction" in params:
        raise FieldError((*path, "direction"), f"only for shape one-way (this one is {shape}): remove it")
    if shape == "halves" and target == "all":
        raise FieldError((*path, "shape"), "halves with target all leaves the other half empty: pick a smaller target")
    return result


def _shape(params: dict[str, Any], path: FieldPath, target: str) -> dict[str, Any]:
    result = {"burst": "32kbit", "latency": "50ms", **params}
    _match(result.get("rate"), (*path, "rate"), _RATE, "a tc rate such as 1mbit or 512kbit", required=True)
    _match(result["burst"], (*path, "burst"), _SIZE, "a tc size such as 32kbit or 16kb", required=True)
    _match(result["latency"], (*path, "latency"), _TC_TIME, "a time such as 50ms", required=True)
    return result


def _netem(params: dict[str, Any], path: FieldPath, target: str) -> dict[str, Any]:
    if "delay" not in params and "loss" not in params:
        raise FieldError(path, "netem needs delay, loss or both (e.g. {delay: 50ms, loss: 1%})")
    for key in ("delay", "jitter"):
        _match(params.get(key), (*path, key), _TC_TIME, "a time such as 50ms", required=False)
    if "jitter" in params and "delay" not in params:
        raise FieldError((*path, "jitter"), "jitter needs a delay")
    if "loss" in params:
        loss = _match(params["loss"], (*path, "loss"), _PERCENT, "a percentage such as 1%", required=True)
        if float(loss.rstrip("%")) > 100:
            raise FieldError((*path, "loss"), f"{loss} is more than 100%")
    return params


def _clock(params: dict[str, Any], path: FieldPath, target: str) -> dict[str, Any]:
    step = _match(params.get("step"), (*path, "step"), _STEP, "a signed duration such as +30s or -2m", required=True)
    seconds(step[1:].strip(), (*path, "step"))
    return params


def _match(value: Any, path: FieldPath, pattern: re.Pattern[str], what: str, *, required: bool) -> str:
    if value is None and not required:
        return ""
    if value is None:
        raise FieldError(path, f"required: {what}")
    text_value = str(value).strip()
    if not pattern.match(text_value):
        raise FieldError(path, f"{value!r} is not {what}")
    return text_value


_PARAM_CHECKS = {
    "kill": _kill,
    "stop": _no_params,
    "pause": _no_params,
    "partition": _partition,
    "shape": _shape,
    "netem": _netem,
    "reboot": _no_params,
    "clock": _clock,
}


def _overlaps(a: Fault, b: Fault) -> bool:
    # half-open windows [at, at+for); a fault without `for` occupies its instant
    a_end = max(a.end_s, a.at_s + 1e-9)
    b_end = max(b.end_s, b.at_s + 1e-9)
    return a.at_s < b_end and b.at_s < a_end


def _check_overlaps(faults: tuple[Fault, ...]) -> None:
    """Two faults on one (group, target) at once would heal each other's state: the schedule is wrong."""
    for i, later in enumerate(faults):
        for j in range(i):
            earlier = faults[j]
            if (earlier.group, earlier.target) == (later.group, later.target) and _overlaps(earlier, later):
                raise FieldError(
                    ("faults", i),
                    f"overlaps faults[{j}] on {later.group}/{later.target} ({earlier.kind} {_window(earlier)}, "
                    f"{later.kind} {_window(later)}): move one or give another target",
                )


def _window(fault: Fault) -> str:
    return f"at {fault.at_s:g} s" if fault.for_s is None else f"{fault.at_s:g}-{fault.end_s:g} s"
