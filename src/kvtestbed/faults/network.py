"""Network faults: partitions with nftables, link shaping with tc tbf, and netem where the kernel has it.

Partitions live in a table of our own, `inet kvtestbed_fault`, one pair of base chains per fault (so two faults
on one host heal one at a time); nothing else in the host's ruleset is read or changed. A drop in any base chain
is final in nftables, so our chains cut traffic whatever the host's own firewall accepts. Only inventory hosts
are cut: the controller keeps reaching both sides (it must, to heal and to measure).

Shaping makes a qdisc with our own handle (fa17:) the root of the host's default-route device (it shapes what
the host sends). Where the root was the kernel's default (handle 0:) heal deletes ours and the kernel restores
its default; where it was someone's tbf (the lab's link emulation) heal puts that tbf back with its recorded
rate, burst and latency. Heal touches the root only after finding our handle on it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from typing import Any

from kvtestbed.faults.base import Fault
from kvtestbed.faults.errors import FaultError, FaultSpecError, FaultUnsupported
from kvtestbed.inventory import Host

TABLE = "kvtestbed_fault"
# ahead of any filter a host's own firewall uses (0) and of conntrack's (-200 is only raw)
PRIORITY = -150
QDISC_HANDLE = "fa17:"
SHAPES = ("isolate", "halves", "one-way")
_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$", re.IGNORECASE)
_SIZE = re.compile(r"^\d+(\.\d+)?(b|kb|mb|kbit|mbit)?$", re.IGNORECASE)
_TIME = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")
_PERCENT = re.compile(r"^\d+(\.\d+)?%$")


def _chain(fault_id: str, direction: str) -> str:
    return f"{direction}_{fault_id.replace('-', '_')}"


def nft_rules(fault_id: str, drop_from: list[str], drop_to: list[str]) -> str:
    """The nft script that adds this fault's chains: drop packets from drop_from and to drop_to."""
    lines = [f"table inet {TABLE} {{"]
    for direction, hook, field, addresses in (("in", "input", "saddr", drop_from), ("out", "output", "daddr", drop_to)):
        if not addresses:
            continue
        lines.append(f"  chain {_chain(fault_id, direction)} {{")
        lines.append(f"    type filter hook {hook} priority {PRIORITY}; policy accept;")
        for family, nft_family in ((4, "ip"), (6, "ip6")):
            chosen = sorted(a for a in addresses if ipaddress.ip_address(a).version == family)
            if chosen:
                lines.append(f"    {nft_family} {field} {{ {', '.join(chosen)} }} drop")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def nft_undo(fault_id: str) -> str:
    """Delete this fault's chains, then our table once no chain is left in it; never another table.
    Succeeds when none of this fault's chains is left."""
    chains = " ".join(f"nft delete chain inet {TABLE} {_chain(fault_id, d)} 2>/dev/null;" for d in ("in", "out"))
    ours = fault_id.replace("-", "_")
    return (f"{chains} if nft list table inet {TABLE} >/dev/null 2>&1 && ! nft list table inet {TABLE} | "
            f"grep -q 'chain '; then nft delete table inet {TABLE}; fi; "
            f"! nft list table inet {TABLE} 2>/dev/null | grep -qE 'chain (in|out)_{ours} '")


def _addresses(hosts: list[Host]) -> list[str]:
    found = []
    for host in hosts:
        try:
            ipaddress.ip_address(host.address)
        except ValueError:
            raise FaultSpecError(f"host {host.name}: ansible_host {host.address!r} is not an IP address "
                                 "(a partition cuts addresses)") from None
        found.append(host.address)
    return found


class PartitionFault(Fault):
    kind = "partition"

    def check(self) -> None:
        params = self.spec.params
        self.shape = str(params.get("shape", "isolate"))
        if self.shape not in SHAPES:
            raise FaultSpecError(f"partition: params.shape {self.shape!r} is not one of {', '.join(SHAPES)}")
        self.direction = str(params.get("direction", "in"))
        if self.shape == "one-way" and self.direction not in ("in", "out"):
            raise FaultSpecError(f"partition: params.direction {self.direction!r} is not in or out")
        unknown = set(params) - {"shape", "direction"}
        if unknown:
            raise FaultSpecError(f"partition: unknown params {', '.join(sorted(unknown))} (shape, direction)")

    def affected_hosts(self, targets: list[Host]) -> list[Host]:
        names = {host.name for host in targets}
        target_addresses = {host.address for host in targets}
        if self.shape == "halves":
            others = [h for h in self.ctx.inventory.group(self.spec.group) if h.name not in names]
        else:
            others = [h for h in self.ctx.inventory.all_hosts()
                      if h.name not in names and h.address not in target_addresses]
        if not others:
            raise FaultSpecError(f"partition {self.shape}: nothing is left on the other side of "
                                 f"{', '.join(sorted(names))}")
        self.peers = others
        if self.shape == "one-way":
            return list(targets)
        return list(targets) + others

    def prepare(self) -> None:
        self.rules: dict[str, str] = {}
        target_names = {host.name for host in self.targets}
        target_addresses = _addresses(self.targets)
        peer_addresses = _addresses(self.peers)
        for host in self.affected:
            if host.name in target_names:
                if self.shape == "one-way":
                    drop_from = peer_addresses if self.direction == "in" else []
                    drop_to = peer_addresses if self.direction == "out" else []
                else:
                    drop_from = drop_to = peer_addresses
            else:
                drop_from = drop_to = target_addresses
            self.rules[host.name] = nft_rules(self.id, sorted(set(drop_from)), sorted(set(drop_to)))

    def undo(self, host: Host) -> str:
        return nft_undo(self.id)

    def intent(self, host: Host) -> dict[str, Any]:
        return dict(super().intent(host), table=f"inet {TABLE}")

    def inject_on(self, host: Host) -> None:
        self.run(host, "nft -f -", input_text=self.rules[host.name])

    def verify_on(self, host: Host) -> None:
        listing = self.remote(host).run(f"nft list table inet {TABLE} 2>/dev/null").stdout
        if _chain(self.id, "in") + " " in listing or _chain(self.id, "out") + " " in listing:
            raise FaultError(f"host {host.name}: chains of {self.id} are still in table inet {TABLE}")


def _check(pattern: re.Pattern[str], value: Any, name: str, kind: str, example: str) -> str:
    text = str(value)
    if not pattern.match(text):
        raise FaultSpecError(f"{kind}: params.{name} {text!r} is not like {example}")
    return text


def default_device(fault: Fault, host: Host) -> str:
    out = fault.run(host, "ip -o route show default")
    match = re.search(r"\bdev (\S+)", out)
    if not match:
        raise FaultError(f"host {host.name}: no default route, so no device to shape")
    return match.group(1)


def root_qdisc(fault: Fault, host: Host, device: str) -> dict[str, Any]:
    """The device's root qdisc as `tc -j -d` reports it: kind, handle ('0:' for the kernel's default), options."""
    out = fault.run(host, f"tc -j -d qdisc show dev {shlex.quote(device)} root")
    try:
        found = [entry for entry in json.loads(out) if entry.get("root")]
    except ValueError:
        found = []
    if not found:
        raise FaultError(f"host {host.name}: cannot read the root qdisc of {device}")
    return found[0]


def restore_tbf(device: str, qdisc: dict[str, Any]) -> str | None:
    """The tc command that puts someone's root tbf back as it was, or None when it has options we do not know."""
    options = dict(qdisc.get("options", {}))
    known = {"rate", "burst", "lat", "mpu", "linklayer"}
    if qdisc.get("kind") != "tbf" or set(options) - known or "rate" not in options or "lat" not in options:
        return None
    burst = re.match(r"^(\d+)", str(options.get("burst", "")))
    if not burst:
        return None
    argv = ["tc", "qdisc", "replace", "dev", device, "root", "handle", str(qdisc["handle"]), "tbf",
            "rate", f"{int(options['rate']) * 8}bit", "burst", f"{burst.group(1)}b",
            "latency", f"{int(options['lat'])}us"]
    if int(options.get("mpu") or 0):
        argv += ["mpu", str(int(options["mpu"]))]
    return shlex.join(argv)


def netem_supported(fault: Fault, host: Host) -> bool:
    """Try netem on loopback and take it away again: the only answer a kernel gives for sure."""
    probe = ("if tc qdisc add dev lo root handle fa18: netem delay 1ms 2>/dev/null; then "
             "tc qdisc del dev lo root handle fa18:; echo yes; else echo no; fi")
    return fault.run(host, probe).strip() == "yes"


class QdiscFault(Fault):
    """Our qdisc as the root of the default-route device (tbf for shape, netem for netem)."""

    def qdisc_args(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        self.placement: dict[str, tuple[str, str | None]] = {}  # host -> (device, command restoring theirs)
        for host in self.affected:
            device = default_device(self, host)
            qdisc = root_qdisc(self, host, device)
            handle = str(qdisc.get("handle"))
            if handle == QDISC_HANDLE:
                raise FaultError(f"host {host.name}: {device} already has a qdisc of ours (run kvtestbed heal)")
            if handle == "0:":
                # the kernel's default: deleting ours brings it back
                self.placement[host.name] = (device, None)
                continue
            # someone's own root qdisc (the lab's link emulation is a tbf): ours replaces it and heal puts it back
            # as it was; a child under theirs is no way out, as deleting a child leaves a qdisc that drops all
            restore = restore_tbf(device, qdisc)
            if restore is None:
                raise FaultError(f"host {host.name}: {device} has a root qdisc {qdisc.get('kind')} {handle} of someone "
                                 "else's that heal could not put back; remove it or shape another host")
            self.placement[host.name] = (device, restore)

    def undo(self, host: Host) -> str:
        device, restore = self.placement[host.name]
        dev = shlex.quote(device)
        back = restore or f"tc qdisc del dev {dev} root"
        return (f"if tc qdisc show dev {dev} root | grep -q '^qdisc [a-z_]* {QDISC_HANDLE} '; then {back}; fi; "
                f"! tc qdisc show dev {dev} | grep -q '^qdisc [a-z_]* {QDISC_HANDLE} '")

    def intent(self, host: Host) -> dict[str, Any]:
        device, restore = self.placement[host.name]
        return dict(super().intent(host), device=device, qdisc=f"root handle {QDISC_HANDLE}", restore=restore)

    def inject_on(self, host: Host) -> None:
        device, _ = self.placement[host.name]
        self.run(host, shlex.join(["tc", "qdisc", "replace", "dev", device, "root", "handle", QDISC_HANDLE,
                                   *self.qdisc_args()]))

    def verify_on(self, host: Host) -> None:
        device, restore = self.placement[host.name]
        out = self.run(host, f"tc qdisc show dev {shlex.quote(device)}")
        if f" {QDISC_HANDLE} " in out:
            raise FaultError(f"host {host.name}: our qdisc {QDISC_HANDLE} is still on {device}")


class ShapeFault(QdiscFault):
    kind = "shape"

    def check(self) -> None:
        params = self.spec.params
        unknown = set(params) - {"rate", "burst", "latency"}
        if unknown:
            raise FaultSpecError(f"shape: unknown params {', '.join(sorted(unknown))} (rate, burst, latency)")
        if "rate" not in params:
            raise FaultSpecError("shape: params.rate is required, e.g. rate: 1mbit")
        self.rate = _check(_RATE, params["rate"], "rate", "shape", "1mbit")
        self.burst = _check(_SIZE, params.get("burst", "32kbit"), "burst", "shape", "32kbit")
        self.latency = _check(_TIME, params.get("latency", "50ms"), "latency", "shape", "50ms")

    def qdisc_args(self) -> list[str]:
        return ["tbf", "rate", self.rate, "burst", self.burst, "latency", self.latency]


class NetemFault(QdiscFault):
    kind = "netem"

    def check(self) -> None:
        params = self.spec.params
        unknown = set(params) - {"delay", "jitter", "loss"}
        if unknown:
            raise FaultSpecError(f"netem: unknown params {', '.join(sorted(unknown))} (delay, jitter, loss)")
        if not params:
            raise FaultSpecError("netem: give params.delay and/or params.loss, e.g. delay: 50ms")
        self.delay = _check(_TIME, params["delay"], "delay", "netem", "50ms") if "delay" in params else None
        self.jitter = _check(_TIME, params["jitter"], "jitter", "netem", "10ms") if "jitter" in params else None
        self.loss = _check(_PERCENT, params["loss"], "loss", "netem", "1%") if "loss" in params else None
        if self.jitter and not self.delay:
            raise FaultSpecError("netem: params.jitter needs params.delay")

    def prepare(self) -> None:
        for host in self.affected:
            if not netem_supported(self, host):
                raise FaultUnsupported(f"netem: unsupported on this kernel (sch_netem missing; probed on {host.name})")
        super().prepare()

    def qdisc_args(self) -> list[str]:
        args = ["netem"]
        if self.delay:
            args += ["delay", self.delay] + ([self.jitter] if self.jitter else [])
        if self.loss:
            args += ["loss", self.loss]
        return args

