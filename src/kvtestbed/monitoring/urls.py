"""`kvtestbed urls`: where the testbed's web UIs are and how to log in, read from the inventory.

Prometheus on each monitoring host, Locust's web UI on its master (the host with locust_role: master), Grafana on
the hosts of a `grafana` group, else the monitoring hosts (as playbooks/monitoring.yml places it), unless the
inventory turns it off (grafana_deploy: false, the lab). Ports and logins are the inventory's values, else the
roles' defaults. A password is never printed: only the file on the controller that holds it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvtestbed.inventory import Host, Inventory

# the roles' defaults (roles/prometheus, roles/locust, roles/grafana), for hosts whose inventory does not say
PROMETHEUS_PORT = 9090
LOCUST_WEB_PORT = 8089
LOCUST_WEB_USER = "admin"
GRAFANA_PORT = 3000
GRAFANA_ADMIN_USER = "admin"
# the password files the locust and grafana roles generate in the secrets dir
LOCUST_PASSWORD_FILE = "locust-web-password"
GRAFANA_PASSWORD_FILE = "grafana-admin-password"
# what each UI answers without a login when it is up
HEALTH_PATHS = {"Prometheus": "/-/ready", "Locust": "/", "Grafana": "/api/health"}
CHECK_TIMEOUT_S = 3.0
_WILDCARDS = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Endpoint:
    service: str  # Prometheus, Locust or Grafana
    host: str
    url: str
    login: str


@dataclass(frozen=True)
class Listing:
    endpoints: list[Endpoint]
    notes: list[str]  # one line each: what is not there, and why


def _var(host: Host, name: str, default: Any) -> Any:
    """A host var, or `default` when the inventory does not set it (or left it a template we cannot render)."""
    value = host.vars.get(name)
    if value is None or value == "" or (isinstance(value, str) and "{{" in value):
        return default
    return value


def _port(host: Host, name: str, default: int) -> int:
    value = _var(host, name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _url(address: str, port: int) -> str:
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


def _address(host: Host, listen_var: str) -> str:
    """Where the service listens: its listen address when the inventory pins one, else the host's address."""
    listen = str(_var(host, listen_var, ""))
    return host.address if listen in _WILDCARDS else listen


def _turned_off(host: Host, name: str) -> bool:
    value = host.vars.get(name, True)
    return value is False or str(value).strip().lower() in ("false", "no", "0", "off")


def _shown(path: Path, root: Path | None) -> str:
    """The password file as a user types it: relative to the checkout when it is inside."""
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)


def service_urls(inventory: Inventory, secrets_dir: Path, root: Path | None = None) -> Listing:
    endpoints: list[Endpoint] = []
    notes: list[str] = []
    monitoring = inventory.groups.get("monitoring") or []
    if not monitoring:
        notes.append(f"no monitoring group in {inventory.source}: no Prometheus or Grafana "
                     "(add a monitoring host, docs/monitoring.md)")  # fmt: skip
    for name in monitoring:
        host = inventory.hosts[name]
        port = _port(host, "prometheus_port", PROMETHEUS_PORT)
        endpoints.append(Endpoint("Prometheus", name, _url(_address(host, "prometheus_listen_address"), port),
                                  "no login"))  # fmt: skip

    masters = [host for host in inventory.all_hosts() if _var(host, "locust_role", "") == "master"]
    if not masters:
        notes.append("Locust: no host has locust_role: master")
    for host in masters:
        port = _port(host, "locust_web_port", LOCUST_WEB_PORT)
        user = _var(host, "locust_web_user", LOCUST_WEB_USER)
        password = _shown(secrets_dir / LOCUST_PASSWORD_FILE, root)
        endpoints.append(Endpoint("Locust", host.name, _url(_address(host, "locust_web_host"), port),
                                  f"user {user}, password in {password}"))  # fmt: skip

    grafana_hosts = inventory.groups.get("grafana") or monitoring
    for name in grafana_hosts:
        host = inventory.hosts[name]
        if _turned_off(host, "grafana_deploy"):
            notes.append(f"Grafana: not deployed on {name} (grafana_deploy: false)")
            continue
        port = _port(host, "grafana_port", GRAFANA_PORT)
        user = _var(host, "grafana_admin_user", GRAFANA_ADMIN_USER)
        password = _shown(secrets_dir / GRAFANA_PASSWORD_FILE, root)
        endpoints.append(Endpoint("Grafana", name, _url(_address(host, "grafana_listen_address"), port),
                                  f"user {user}, password in {password}"))  # fmt: skip
    return Listing(endpoints, notes)


def probe(endpoint: Endpoint, timeout_s: float = CHECK_TIMEOUT_S) -> str:
    """'up (HTTP n)' when the UI answers at all (a login page or 401 is up), else 'down (why)'."""
    url = endpoint.url + HEALTH_PATHS.get(endpoint.service, "/")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return f"up (HTTP {reply.status})"
    except urllib.error.HTTPError as exc:
        return f"up (HTTP {exc.code})"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"down ({reason})"


def probe_all(endpoints: list[Endpoint], timeout_s: float = CHECK_TIMEOUT_S) -> list[str]:
    if not endpoints:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(endpoints))) as pool:
        return list(pool.map(lambda e: probe(e, timeout_s), endpoints))


def format_lines(listing: Listing, states: list[str] | None = None) -> list[str]:
    rows = [(e.service, e.host, e.url, e.login) for e in listing.endpoints]
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(3)]
    lines = []
    for index, row in enumerate(rows):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        if states is not None:
            line += f"  [{states[index]}]"
        lines.append(line)
    return lines + listing.notes
