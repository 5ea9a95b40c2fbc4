"""What the workload users share: a redis-py client for a redis:// target with the run's password and CA, the
one-line probe before load, and small checks.

The client is redis-py, made cooperative by Locust's gevent monkey patching (its socket I/O is Python). One
connection per user and one request in flight per user is enough at workload rates: redis-py did 8.8k round trips/s
on one connection on this machine kind (../shared/research/load-and-measurement.md), while the agents' own drivers
run at 100-5,000 operations/s. Key-value throughput is kvload.resp's job (kvload.users.kv), not this module's.
redis-py's own retries are off: a silent retry would re-send an XADD (a second request) or hide an outage.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import redis
from locust.env import Environment
from redis.backoff import NoBackoff
from redis.retry import Retry

from kvload.plugin import PreflightError, read_secret

log = logging.getLogger(__name__)

# While a user has nothing to send (expiry: all tickets taken) it looks again this often; short, because Locust's
# graceful stop waits for a running task to end.
IDLE_S = 0.5
CONNECT_TIMEOUT_S = 3.0

# ------------------------------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class RedisTarget:
    """A redis:// or rediss:// URL, checked; the label never carries a secret."""

    host: str
    port: int
    db: int
    username: str | None
    tls: bool

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


def parse_redis_url(url: str, option: str) -> RedisTarget:
    """redis://[user@]host[:port][/db] or rediss://...; PreflightError naming `option` otherwise."""
    text = (url or "").strip()
    if not text:
        raise PreflightError(f"{option}: give the target as redis://host:port")
    parsed = urlparse(text)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        scheme = parsed.scheme or "bare"
        raise PreflightError(f"{option}: use redis://host:port or rediss://host:port (got a {scheme} URL)")
    if parsed.password:
        raise PreflightError(f"{option}: no password in the URL; put it in the file --kvt-password-file names")
    try:
        port = parsed.port or 6379
    except ValueError:
        raise PreflightError(f"{option}: the port must be a number 1..65535") from None
    path = parsed.path.strip("/")
    if path and not path.isdigit():
        raise PreflightError(f"{option}: the path is the database number, e.g. redis://host:6379/0")
    username = unquote(parsed.username) if parsed.username else None
    return RedisTarget(parsed.hostname, port, int(path or 0), username, parsed.scheme == "rediss")


def connect(environment: Environment, url: str, option: str, timeout_s: float = 5.0) -> redis.Redis:
    """A redis-py client for `url` with the run's password (--kvt-password-file) and CA (--kvt-tls-ca)."""
    target = parse_redis_url(url, option)
    options = environment.parsed_options
    password = read_secret(getattr(options, "kvt_password_file", "") or "")
    ca = getattr(options, "kvt_tls_ca", "") or ""
    tls: dict[str, Any] = {}
    if target.tls:
        tls = {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
        if ca:
            if not os.access(ca, os.R_OK):
                raise PreflightError(f"--kvt-tls-ca {ca}: no readable file there")
            tls["ssl_ca_certs"] = ca
    return redis.Redis(
        host=target.host,
        port=target.port,
        db=target.db,
        username=target.username,
        password=password,
        socket_timeout=timeout_s,
        socket_connect_timeout=min(timeout_s, CONNECT_TIMEOUT_S),
        retry=Retry(NoBackoff(), 0),
        **tls,
    )


def one_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


AUTH_FAILED = "authentication failed (check --kvt-password-file)"


def probe(environment: Environment, url: str, option: str) -> None:
    """PING `url` once: PreflightError with one line when it is unreachable, refuses the password or the TLS."""
    target = parse_redis_url(url, option)
    client = connect(environment, url, option, timeout_s=CONNECT_TIMEOUT_S)
    try:
        client.ping()
    except redis.AuthenticationError:
        raise PreflightError(f"{option} {target.label}: {AUTH_FAILED}") from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc) or "NOPERM" in str(exc):
            raise PreflightError(f"{option} {target.label}: {AUTH_FAILED}") from None
        raise PreflightError(f"{option} {target.label}: {one_line(exc)}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        text = one_line(exc)
        if "SSL" in text or "certificate" in text:
            raise PreflightError(f"{option} {target.label}: TLS verification failed ({text})") from None
        raise PreflightError(f"{option} {target.label}: unreachable ({text})") from None
    finally:
        client.close()


def host_url(environment: Environment) -> str:
    return environment.host or ""


def at_least(value: float, option: str, minimum: float = 1) -> None:
    if not isinstance(value, int | float) or math.isnan(value) or value < minimum:
        shown = f"{value:g}" if isinstance(value, int | float) else "?"
        raise PreflightError(f"{option} {shown}: must be >= {minimum:g}")
