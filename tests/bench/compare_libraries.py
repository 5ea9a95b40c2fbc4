"""Figures behind "our own part or a library" (docs/agents.md, "Why these parts are our own").

    .venv/bin/python -m tests.bench.compare_libraries http      # our HttpServer vs aiohttp: RSS, latency
    .venv/bin/python -m tests.bench.compare_libraries imports   # RSS of an agent's imports +pydantic/msgspec/aiohttp

Needs aiohttp, pydantic and msgspec in the venv (`.venv/bin/pip install aiohttp pydantic msgspec`); the
agents do not depend on them. Everything is measured side by side in one run, so read the ratios:

- http: two server processes (same imports as a streams agent, same Prometheus registry: ProcessMetrics and
  latency histograms) serve GET /metrics and POST /request, one with kvagent's HttpServer, one with aiohttp,
  both on uvloop and pinned to one CPU. One keep-alive client per server (raw blocking sockets, pinned to the
  other CPU) sends at a fixed rate, interleaving the two servers request by request (order flipped every
  tick), for several rounds. Then, when `wrk` is installed, wrk -t1 -c8 (closed loop, keep-alive) alternates
  between them. RSS is VmRSS/VmHWM from /proc after start and after the load.
- imports: fresh interpreters import what every agent kind imports and report VmRSS, alone and with
  pydantic (a model defined and validated), msgspec (a Struct defined and converted) or aiohttp imported
  too; several interpreters each, median and range.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# One agent process imports its own kind only (kvagent.main imports kinds lazily). streams serves HTTP
# ingress and has no NATS; expiry is a NATS agent (nats-py imports aiohttp, for websockets, when installed).
AGENT_IMPORTS = {
    "streams": "import kvagent.main, kvagent.service.shell, kvagent.workloads.streams.agent",
    "expiry": "import kvagent.main, kvagent.service.shell, kvagent.workloads.expiry.agent",
}
# An agent host has no aiohttp: hide it from the baseline, else nats-py would pull it in when installed.
NO_AIOHTTP = "import sys; sys.modules['aiohttp'] = None\n"
POST_BODY = b'{"payload": "0123456789abcdef0123456789abcdef0123456789abcdef"}'


def vm_kb(pid: int | str, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    assert match, field
    return int(match.group(1))


# -- servers (run in child processes) --------------------------------------------------------------------
def _registry() -> Any:
    import kvagent.workloads.streams.agent  # noqa: F401 - an ingress agent's imports, for a realistic RSS
    from kvagent.service.metrics import LatencyMetric, ProcessMetrics
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    ProcessMetrics(registry)
    latency = LatencyMetric(registry, "kvt_bench_latency", "bench latency", ["op"])
    for op in ("request", "queue", "process"):
        for us in (50, 120, 400, 2000):
            latency.record_us(us, op=op)
    return registry


def serve_own(ready_fd: int) -> None:
    import uvloop
    from kvagent.service.httpserver import HttpServer, Request, Response
    from prometheus_client import generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    registry = _registry()

    async def handle(req: Request) -> Response:
        if req.path == "/metrics":
            return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)
        if req.path == "/request" and req.method == "POST":
            return Response(200, b'{"status": "ok", "n": %d}' % len(req.body), "application/json")
        return Response(404, b"not found\n")

    async def main() -> None:
        import asyncio

        server = HttpServer(handle, "127.0.0.1", 0)
        await server.start()
        os.write(ready_fd, b"%d\n" % server.port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.close()

    uvloop.run(main())


def serve_aiohttp(ready_fd: int) -> None:
    import uvloop
    from aiohttp import web
    from prometheus_client import generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    registry = _registry()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def ingress(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=b'{"status": "ok", "n": %d}' % len(body), content_type="application/json")

    async def main() -> None:
        import asyncio

        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/metrics", metrics)
        app.router.add_post("/request", ingress)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        os.write(ready_fd, b"%d\n" % port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    uvloop.run(main())


class ServerProc:
    def __init__(self, which: str, cpu: int | None) -> None:
        self.which = which
        read_fd, write_fd = os.pipe()
        argv = [sys.executable, "-m", "tests.bench.compare_libraries", f"serve-{which}", str(write_fd)]
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        self.proc = subprocess.Popen(argv, pass_fds=(write_fd,))
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:  # the child writes its port once listening (EOF if it died)
            line = pipe.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError(f"{which} server did not start (exit {self.proc.wait(10)})")
        self.port = int(line)

    def rss(self) -> tuple[int, int]:
        return vm_kb(self.proc.pid, "VmRSS"), vm_kb(self.proc.pid, "VmHWM")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# -- client ----------------------------------------------------------------------------------------------
class KeepAliveClient:
    """One persistent HTTP/1.1 connection; request() returns (status, body) after reading the whole reply."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, raw: bytes) -> tuple[int, bytes]:
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection mid-body")
            rest += chunk
        self.buf = rest[length:]
        return status, rest[:length]

    def close(self) -> None:
        self.sock.close()


REQUESTS = {
    "GET /metrics": b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "POST /request": b"POST /request HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(POST_BODY), POST_BODY),
}


def paced_round(clients: dict[str, KeepAliveClient], rate: int, seconds: float) -> dict[tuple[str, str], list[int]]:
    """rate ticks/s; each tick sends every request kind to every server, the servers' order flipped each tick."""
    samples: dict[tuple[str, str], list[int]] = {(s, r): [] for s in clients for r in REQUESTS}
    order = list(clients)
    next_t = time.monotonic()
    for tick in range(int(rate * seconds)):
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for name in order if tick % 2 == 0 else order[::-1]:
            for req_name, raw in REQUESTS.items():
                start = time.perf_counter_ns()
                status, _ = clients[name].request(raw)
                samples[(name, req_name)].append(time.perf_counter_ns() - start)
                assert status == 200, (name, req_name, status)
        next_t += 1 / rate
    return samples


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000


def run_wrk(port: int, request: str, cpu: int | None, seconds: int) -> tuple[float, str, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        if request.startswith("POST"):
            body = POST_BODY.decode()
            script.write(f"wrk.method = 'POST'\nwrk.body = '{body}'\n")
            script.write("wrk.headers['Content-Type'] = 'application/json'\n")
        path = script.name
    url = f"http://127.0.0.1:{port}{request.split(' ')[1]}"
    argv = ["wrk", "-t1", "-c8", f"-d{seconds}s", "--latency", "-s", path, url]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    finally:
        os.unlink(path)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    return rps, p50, p99


def cmd_http(args: argparse.Namespace) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 and shutil.which("taskset") else (None, None)
    print(f"placement: servers on CPU {server_cpu}, clients on CPU {client_cpu}")
    servers = {"own": ServerProc("own", server_cpu), "aiohttp": ServerProc("aiohttp", server_cpu)}
    try:
        for name, srv in servers.items():
            print(f"RSS after start  {name:8s}: VmRSS {srv.rss()[0] / 1024:.1f} MB")
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        clients = {name: KeepAliveClient(srv.port) for name, srv in servers.items()}
        paced_round(clients, args.rate, 0.5)  # warm-up
        for rnd in range(args.rounds):
            samples = paced_round(clients, args.rate, args.seconds)
            for req_name in REQUESTS:
                own, aio = samples[("own", req_name)], samples[("aiohttp", req_name)]
                print(
                    f"round {rnd + 1} {req_name:14s} @ {args.rate}/s keep-alive: "
                    f"own p50 {pct(own, 0.5):6.0f} us p99 {pct(own, 0.99):6.0f} us | "
                    f"aiohttp p50 {pct(aio, 0.5):6.0f} us p99 {pct(aio, 0.99):6.0f} us | "
                    f"aiohttp/own p50 x{pct(aio, 0.5) / pct(own, 0.5):.2f} p99 x{pct(aio, 0.99) / pct(own, 0.99):.2f}"
                )
        for client in clients.values():
            client.close()
        if shutil.which("wrk"):
            for rnd in range(args.rounds):
                for req_name in REQUESTS:
                    figures = {name: run_wrk(srv.port, req_name, client_cpu, 3) for name, srv in servers.items()}
                    own, aio = figures["own"], figures["aiohttp"]
                    print(
                        f"wrk round {rnd + 1} {req_name:14s} -t1 -c8 3 s: own {own[0]:8.0f} req/s p50 {own[1]} "
                        f"p99 {own[2]} | aiohttp {aio[0]:8.0f} req/s p50 {aio[1]} p99 {aio[2]} | "
                        f"aiohttp/own throughput x{aio[0] / own[0]:.2f}"
                    )
        for name, srv in servers.items():
            rss, hwm = srv.rss()
            print(f"RSS after load   {name:8s}: VmRSS {rss / 1024:.1f} MB, peak (VmHWM) {hwm / 1024:.1f} MB")
    finally:
        for srv in servers.values():
            srv.stop()


IMPORT_VARIANTS = {
    "agent imports": NO_AIOHTTP,
    "+ pydantic (model validated)": NO_AIOHTTP
    + "import pydantic\n"
    "class E(pydantic.BaseModel):\n    host: str = '127.0.0.1'\n    port: int = 6379\n"
    "class W(pydantic.BaseModel):\n    endpoint: E\n    rate: float = 1000.0\n"
    "W.model_validate({'endpoint': {'host': 'h', 'port': 1}, 'rate': 5})\n",
    "+ msgspec (struct converted)": NO_AIOHTTP
    + "import msgspec\n"
    "class E(msgspec.Struct):\n    host: str = '127.0.0.1'\n    port: int = 6379\n"
    "class W(msgspec.Struct):\n    endpoint: E\n    rate: float = 1000.0\n"
    "msgspec.convert({'endpoint': {'host': 'h', 'port': 1}, 'rate': 5}, W)\n",
    "+ aiohttp (web imported)": "import aiohttp.web\n",
}


def cmd_imports(args: argparse.Namespace) -> None:
    for kind, agent_imports in AGENT_IMPORTS.items():
        results: dict[str, list[int]] = {name: [] for name in IMPORT_VARIANTS}
        for _ in range(args.repeats):  # interleaved, so that a noisy moment hits every variant alike
            for name, before in IMPORT_VARIANTS.items():
                prelude, _, after = before.partition("\n") if before.startswith("import sys;") else ("", "", before)
                code = (
                    f"{prelude}\n{agent_imports}\n{after}import gc, re; gc.collect()\n"
                    "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
                )
                out = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
                )
                results[name].append(int(out.stdout.strip()))
        base = statistics.median(results["agent imports"])
        for name, values in results.items():
            med = statistics.median(values)
            print(
                f"{kind:8s} {name:30s}: VmRSS median {med / 1024:.1f} MB "
                f"(range {min(values) / 1024:.1f}-{max(values) / 1024:.1f}, n={len(values)}), "
                f"{(med - base) / 1024:+.1f} MB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    http = sub.add_parser("http")
    http.add_argument("--rate", type=int, default=250, help="ticks/s; each tick sends 2 requests to each server")
    http.add_argument("--seconds", type=float, default=5.0)
    http.add_argument("--rounds", type=int, default=3)
    imports = sub.add_parser("imports")
    imports.add_argument("--repeats", type=int, default=5)
    for which in ("own", "aiohttp"):
        serve = sub.add_parser(f"serve-{which}")
        serve.add_argument("ready_fd", type=int)
    args = parser.parse_args()
    if args.cmd == "http":
        cmd_http(args)
    elif args.cmd == "imports":
        cmd_imports(args)
    elif args.cmd == "serve-own":
        serve_own(args.ready_fd)
    else:
        serve_aiohttp(args.ready_fd)


if __name__ == "__main__":
    main()
