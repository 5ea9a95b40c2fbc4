"""Prometheus's scrape targets, computed from the inventory (the prometheus role's file_sd files).

`hostvars | prometheus_targets(groups, settings)` returns {"jobs": {job: [target group, ...]}, "problems": [line],
"auth": {job: {"username": name}}}. A target group is what a file_sd file lists: {"targets": ["address:port"],
"labels": {name: value}}, one target each, so every target carries its own labels. "auth" names the user of a job
scraped behind a login (the Locust master's web UI); its password file is the role's. Problems are one line each
(bad input, two targets on one address:port); the role's preflight fails on the first. Pure Python over mappings,
so it is unit-tested without Ansible (tests/unit/monitoring/test_prometheus_targets.py); under Ansible `hostvars`
templates each value as it is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

JOBS = ("prometheus", "node", "redis", "sentinel", "agents", "runner", "nats", "locust")
# the conventions of the exporters role (issue 13): a host var of that role wins over the settings passed here,
# so the targets follow the exporters wherever an inventory moves them
NODE_PORT_VAR = "exporters_node_port"
PORT_OFFSET_VAR = "exporters_redis_port_offset"
NATS_PORT_VAR = "exporters_nats_port"
# what the kvstore, sentinel, agents and locust roles (and the agents' ServiceConfig) use when the inventory says
# nothing
KVSTORE_DEFAULT_PORTS = (6379,)
SENTINEL_DEFAULT_PORT = 26379
AGENT_DEFAULT_METRICS_PORT = 9400
LOCUST_DEFAULT_WEB_PORT = 8089
LOCUST_DEFAULT_WEB_USER = "admin"


class _Problem(Exception):
    """One line naming the host and the variable to fix."""


def _port(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise _Problem(f"{what}: {value!r} is not a port number")
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise _Problem(f"{what}: {value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise _Problem(f"{what}: {port} is not a port number (1-65535)")
    return port


def _offset_port(port: int, offset: int, what: str) -> int:
    shifted = port + offset
    if not 1 <= shifted <= 65535:
        raise _Problem(f"{what}: {port} + exporter port offset {offset} = {shifted} is beyond 65535")
    return shifted


def _enabled(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "no", "off", "0", "")
    return bool(value)


class _Builder:
    def __init__(
        self, hostvars: Mapping[str, Any], groups: Mapping[str, Sequence[str]], settings: Mapping[str, Any]
    ) -> None:
        self.hostvars = hostvars
        self.groups = groups
        self.settings = settings
        self.jobs: dict[str, list[dict[str, Any]]] = {job: [] for job in JOBS}
        self.problems: list[str] = []
        self.auth: dict[str, dict[str, str]] = {}
        # address:port -> who claimed it first, for the duplicate check across every job
        self.owners: dict[str, str] = {}

    def vars_of(self, host: str) -> Mapping[str, Any]:
        # not .get(): Ansible's HostVars answers an unknown host with an undefined marker, not a KeyError
        return self.hostvars[host] if host in self.hostvars else {}  # noqa: SIM401

    def address(self, host: str) -> str:
        return str(self.vars_of(host).get("ansible_host") or host)

    def hosts(self, group: str) -> list[str]:
        return [str(h) for h in (self.groups.get(group) or [])] if group else []

    def offset(self, host: str) -> int:
        value = self.vars_of(host).get(PORT_OFFSET_VAR, self.settings.get("port_offset", 30000))
        try:
            return int(value)
        except (TypeError, ValueError):
            raise _Problem(f"host {host}: {PORT_OFFSET_VAR} {value!r} is not a number") from None

    def add(self, job: str, host: str, address: str, port: int, labels: dict[str, Any], owner: str) -> None:
        target = f"{address}:{port}"
        if target in self.owners:
            self.problems.append(
                f"target {target} is claimed twice: {self.owners[target]} and {owner}; give one of them another port"
            )
            return
        self.owners[target] = owner
        self.jobs[job].append({"targets": [target], "labels": {"host": host, **{k: str(v) for k, v in labels.items()}}})

    def each_host(self, hosts: Sequence[str], build: Any) -> None:
        for host in hosts:
            try:
                build(host)
            except _Problem as problem:
                self.problems.append(str(problem))

    # -- the jobs ---------------------------------------------------------------------------------------------
    def prometheus(self) -> None:
        group = str(self.settings.get("servers_group") or "")
        servers = self.hosts(group)
        if not servers:
            self.problems.append(f"inventory group '{group}' has no hosts: add the host that runs Prometheus")
            return
        port = _port(self.settings.get("port", 9090), "prometheus_port")
        self.each_host(
            servers, lambda h: self.add("prometheus", h, self.address(h), port, {}, f"prometheus (host {h})")
        )

    def node(self) -> None:
        group = str(self.settings.get("node_group") or "")
        if group not in self.groups:
            self.problems.append(f"prometheus_node_group: '{group}' is not an inventory group")
            return

        def build(host: str) -> None:
            port = _port(
                self.vars_of(host).get(NODE_PORT_VAR, self.settings.get("node_port", 9100)),
                f"host {host}: {NODE_PORT_VAR}",
            )
            self.add("node", host, self.address(host), port, {}, f"node (host {host})")

        self.each_host(self.hosts(group), build)

    def redis(self) -> None:
        for group in self.settings.get("kv_groups") or []:
            group = str(group)

            def build(host: str, group: str = group) -> None:
                hv = self.vars_of(host)
                # a deployment the inventory turns off (keydb_deploy: false) has no instances to scrape
                if not _enabled(hv.get(f"{group}_deploy", True)):
                    return
                settings = hv.get(f"{group}_kvstore") or {}
                if not isinstance(settings, Mapping):
                    raise _Problem(f"host {host}: {group}_kvstore must be a mapping (ports, engine, topology)")
                ports = settings.get("ports", hv.get("kvstore_ports", list(KVSTORE_DEFAULT_PORTS)))
                if isinstance(ports, (str, bytes)) or not isinstance(ports, Sequence):
                    raise _Problem(f"host {host}: {group}_kvstore.ports must be a list of ports")
                offset = self.offset(host)
                engine = str(settings.get("engine") or "redis")
                for raw in ports:
                    port = _port(raw, f"host {host}: {group}_kvstore.ports")
                    target = _offset_port(port, offset, f"host {host}: {group}_kvstore.ports")
                    self.add(
                        "redis",
                        host,
                        self.address(host),
                        target,
                        {"deployment": group, "engine": engine, "instance_port": port},
                        f"redis exporter of {group} port {port} (host {host})",
                    )

            self.each_host(self.hosts(group), build)

    def sentinel(self) -> None:
        group = str(self.settings.get("sentinel_group") or "")

        def build(host: str) -> None:
            hv = self.vars_of(host)
            port = _port(hv.get("sentinel_port", SENTINEL_DEFAULT_PORT), f"host {host}: sentinel_port")
            target = _offset_port(port, self.offset(host), f"host {host}: sentinel_port")
            self.add(
                "sentinel",
                host,
                self.address(host),
                target,
                {"deployment": group, "engine": hv.get("sentinel_engine") or "redis", "instance_port": port},
                f"redis exporter of Sentinel {group} port {port} (host {host})",
            )

        self.each_host(self.hosts(group), build)

    def agents(self) -> None:
        group = str(self.settings.get("agents_group") or "")

        def build(host: str) -> None:
            hv = self.vars_of(host)
            instances = hv.get("agents_instances") or []
            if isinstance(instances, (str, bytes, Mapping)) or not isinstance(instances, Sequence):
                raise _Problem(f"host {host}: agents_instances must be a list")
            for index, instance in enumerate(instances):
                if not isinstance(instance, Mapping) or not instance.get("name"):
                    raise _Problem(f"host {host}: agents_instances[{index}] has no name")
                name = str(instance["name"])
                config = instance.get("config") or {}
                service = (config.get("service") or {}) if isinstance(config, Mapping) else {}
                if not isinstance(service, Mapping):
                    raise _Problem(f"host {host}: agents_instances[{name}].config.service must be a mapping")
                port = _port(
                    service.get("metrics_port", AGENT_DEFAULT_METRICS_PORT),
                    f"host {host}: agents_instances[{name}].config.service.metrics_port",
                )
                # the agents role binds the metrics endpoint to the host's address unless the config names one
                address = str(service.get("metrics_host") or hv.get("agents_metrics_host") or self.address(host))
                self.add(
                    "agents",
                    host,
                    address,
                    port,
                    {"agent": name, "kind": instance.get("kind") or ""},
                    f"agent {name} (host {host})",
                )

        self.each_host(self.hosts(group), build)

    def runner(self) -> None:
        """The scenario runner's /metrics: address:port entries as given (the controller is no inventory host)."""
        for entry in self.settings.get("runner_targets") or []:
            address, _, port_text = str(entry).rpartition(":")
            if not address:
                self.problems.append(f"prometheus_runner_targets: {entry!r} is not address:port")
                continue
            port = _port(port_text, f"prometheus_runner_targets {entry!r}")
            self.add("runner", "controller", address, port, {}, "the scenario runner")

    def nats(self) -> None:
        """The NATS collector (roles/exporters) beside each server of the group, where it listens."""
        group = str(self.settings.get("nats_group") or "")

        def build(host: str) -> None:
            port = _port(
                self.vars_of(host).get(NATS_PORT_VAR, self.settings.get("nats_port", 7777)),
                f"host {host}: {NATS_PORT_VAR}",
            )
            self.add("nats", host, self.address(host), port, {}, f"NATS collector (host {host})")

        self.each_host(self.hosts(group), build)

    def locust(self) -> None:
        """Each Locust master's /metrics, on its web UI (locust_web_host:locust_web_port) behind the UI's login: a
        host of the group whose locust_role is master, or says nothing (a worker-only host says so)."""
        group = str(self.settings.get("locust_group") or "")
        users: dict[str, str] = {}

        def build(host: str) -> None:
            hv = self.vars_of(host)
            if str(hv.get("locust_role") or "master") != "master":
                return
            port = _port(
                hv.get("locust_web_port", self.settings.get("locust_port", LOCUST_DEFAULT_WEB_PORT)),
                f"host {host}: locust_web_port",
            )
            address = str(hv.get("locust_web_host") or self.address(host))
            self.add("locust", host, address, port, {}, f"Locust master (host {host})")
            users[host] = str(hv.get("locust_web_user") or LOCUST_DEFAULT_WEB_USER)

        self.each_host(self.hosts(group), build)
        if len(set(users.values())) > 1:
            # one job, one login: Prometheus sends the same user to every target of a job
            named = ", ".join(f"{host}: {user}" for host, user in sorted(users.items()))
            raise _Problem(f"locust_web_user differs between the Locust masters ({named}); give them one user")
        if users:
            self.auth["locust"] = {"username": next(iter(users.values()))}


def prometheus_targets(
    hostvars: Mapping[str, Any], groups: Mapping[str, Sequence[str]], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Every job's target groups and every problem found, from the inventory's groups and host vars.

    settings: servers_group (the Prometheus hosts: the `prometheus` job), port, node_group, node_port, kv_groups
    (each host of group G has G_kvstore.ports: one redis exporter per port at port + port_offset), sentinel_group
    (sentinel_port + port_offset), agents_group (agents_instances[].config.service.metrics_port), port_offset,
    runner_targets (address:port of the scenario runner's /metrics, the controller), nats_group and nats_port (the
    NATS collector beside each server), locust_group and locust_port (each Locust master's web UI, its /metrics).
    """
    builder = _Builder(hostvars, groups, settings)
    for job in JOBS:
        try:
            getattr(builder, job)()
        except _Problem as problem:
            builder.problems.append(str(problem))
    # one bad host var can spoil several jobs (a port offset: every exporter of the host): say it once
    return {"jobs": builder.jobs, "problems": list(dict.fromkeys(builder.problems)), "auth": builder.auth}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"prometheus_targets": prometheus_targets}
