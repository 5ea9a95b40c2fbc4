"""The master a Sentinel set names, asked again at every (re)connect so a failover is followed.

Each resolution asks the Sentinels in turn (one short connection each, bounded by the connect timeout) and takes
the first answer; none answering, or none knowing the master, is a RespConnectionError the caller's backoff paces.
Connections to the master check INFO replication's role on connect and drop themselves on a READONLY reply: a
demoted master keeps accepting connections for a while, and writes must not land on (or be refused by) a replica.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis

from kvload.resp.connection import (
    Address,
    Connection,
    ConnectSettings,
    RespConnectionError,
    RespError,
    reason_of,
)


class SentinelResolver:
    def __init__(
        self, sentinels: Sequence[Address], master_name: str, settings: ConnectSettings, password: str | None = None
    ) -> None:
        self.sentinels = list(sentinels)
        self.master_name = master_name
        # Sentinels have a password of their own (requirepass, --kvt-sentinel-password-file), not the data nodes'
        # ACL user; no SELECT; TLS as the target's
        self._settings = ConnectSettings(
            password=password,
            ssl_context=settings.ssl_context,
            connect_timeout_s=settings.connect_timeout_s,
            reply_timeout_s=settings.connect_timeout_s,
        )

    def master(self) -> Address:
        errors: list[str] = []
        for i, address in enumerate(list(self.sentinels)):
            conn = Connection(address, self._settings)
            try:
                reply = conn.call(b"SENTINEL", b"get-master-addr-by-name", self.master_name)
            except (RespConnectionError, RespError) as exc:
                errors.append(f"{address[0]}:{address[1]} {reason_of(exc)}")
                continue
            finally:
                conn.close()
            if not reply:
                errors.append(f"{address[0]}:{address[1]} does not know master {self.master_name!r}")
                continue
            if i:  # ask the Sentinel that answered first next time (as redis-py does)
                self.sentinels.insert(0, self.sentinels.pop(i))
            return reply[0].decode(), int(reply[1])
        raise RespConnectionError(None, "; ".join(errors), f"no Sentinel named master {self.master_name!r}")


def check_master(replies: list[Any]) -> None:
    """The handshake's INFO replication reply: refuse a server that is not (or no longer) the master.

    INFO, not ROLE: ROLE is an @admin command, and a load user is rightly not an admin (the kvstore role's `agent`
    user is +@all -@admin, which refused ROLE with NOPERM in the lab)."""
    info = replies[0]
    if isinstance(info, hiredis.ReplyError):
        raise RespConnectionError(None, f"INFO replication refused: {info}", "cannot connect")
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    role = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("role:")), "")
    if role == "master":
        return
    raise RespConnectionError(None, f"it is a {role or 'server without a role'}, not the master", "cannot connect")


def master_connection(resolver: SentinelResolver, settings: ConnectSettings) -> Connection:
    return Connection(
        resolver.master, settings, handshake=[(b"INFO", b"replication")], check=check_master, drop_on_readonly=True
    )
