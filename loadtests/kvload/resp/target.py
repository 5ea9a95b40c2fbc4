"""Locust's --host for the key-value users: which server(s), how to reach them, and who we are.

    redis://[user@]host[:port][/db]                       standalone (rediss:// with TLS)
    redis+sentinel://h[:p][,h[:p]...]/<master-name>[/db]  the master Sentinel names (rediss+sentinel:// with TLS)
    redis+cluster://h[:p][,h[:p]...]                      Redis Cluster startup nodes (rediss+cluster:// with TLS)

Hosts may be bracketed IPv6 ([::1]:6379). The password never comes from the URL (a URL lands in shell history,
process lists, the web UI and reports): it is read from --kvt-password-file, and a URL carrying one is refused
with a message that does not repeat it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

Kind = Literal["standalone", "sentinel", "cluster"]
Address = tuple[str, int]

_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379


class TargetError(ValueError):
    """A --host the key-value users cannot use; one line naming what to fix, never a password."""


@dataclass(frozen=True)
class Target:
    kind: Kind
    tls: bool
    nodes: tuple[Address, ...]  # the server; Sentinels; or Cluster startup nodes
    username: str | None = None
    db: int = 0
    master_name: str | None = None
    url: str = ""  # as given (it cannot hold a password), for messages

    def __str__(self) -> str:
        return self.url


def parse_target(url: str) -> Target:
    text = (url or "").strip()
    if not text:
        raise TargetError("--host: missing; give the target, e.g. redis://127.0.0.1:6379")
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise TargetError(
            f"--host {_safe(text)}: unknown scheme, use redis://, rediss://, redis+sentinel://, redis+cluster:// "
            "(or their rediss+ forms)"
        )
    kind, tls = _SCHEMES[scheme.lower()]
    netloc, _, path = rest.partition("/")
    username: str | None = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        if ":" in userinfo:
            raise TargetError("--host: the URL carries a password; remove it and pass --kvt-password-file instead")
        username = unquote(userinfo) or None
    if "?" in path or "?" in netloc or "#" in path:
        raise TargetError(f"--host {text}: query parameters are not supported")
    default_port = DEFAULT_SENTINEL_PORT if kind == "sentinel" else DEFAULT_PORT
    nodes = tuple(_address(part, default_port, text) for part in netloc.split(","))
    if kind == "standalone" and len(nodes) != 1:
        raise TargetError(f"--host {text}: {scheme}:// takes one host (use redis+cluster:// or redis+sentinel://)")
    segments = [s for s in path.split("/") if s]
    master_name: str | None = None
    if kind == "sentinel":
        if not segments:
            raise TargetError(f"--host {text}: name the master after the Sentinels, e.g. {scheme}://h:26379/mymaster")
        master_name = unquote(segments.pop(0))
    if len(segments) > 1:
        raise TargetError(f"--host {text}: unexpected path {path!r}")
    db = 0
    if segments:
        if not segments[0].isdigit():
            raise TargetError(f"--host {text}: the database {segments[0]!r} is not a number")
        db = int(segments[0])
        if kind == "cluster" and db != 0:
            raise TargetError(f"--host {text}: Redis Cluster has only database 0")
    return Target(kind, tls, nodes, username, db, master_name, text)


def _address(part: str, default_port: int, url: str) -> Address:
    part = part.strip()
    if not part:
        raise TargetError(f"--host {url}: missing host")
    if part.startswith("["):
        host, bracket, tail = part[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise TargetError(f"--host {url}: bad IPv6 address {part!r}")
        port_text = tail[1:]
    else:
        host, _, port_text = part.partition(":")
        if ":" in port_text:
            raise TargetError(f"--host {url}: IPv6 addresses need brackets, e.g. [::1]:6379")
    if not host:
        raise TargetError(f"--host {url}: missing host in {part!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TargetError(f"--host {url}: port {port_text!r} is not a port number")
    return host, int(port_text)


def _safe(text: str) -> str:
    """The URL for a message, with anything that could be a password (user:secret@) cut out."""
    scheme, sep, rest = text.partition("://")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "…@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{path}"
