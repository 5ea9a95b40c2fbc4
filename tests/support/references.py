"""Reference clients for benchmarks: the least code that does the job, as a floor to compare against."""

from __future__ import annotations

import socket
import time


def paced_get_us(port: int, rate: int = 1000, seconds: float = 3.0) -> tuple[float, float]:
    """GET round trips from a minimal blocking client at a fixed pace (sleeping between requests).

    redis-benchmark keeps client and server busy back to back; at 1,000 requests/s both sleep between
    requests and each request pays their wake-ups. This reference shows that cost without any agent or Locust code.
    """
    request = b"*2\r\n$3\r\nGET\r\n$13\r\nbench:missing\r\n"
    samples: list[int] = []
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        next_t = time.monotonic()
        for _ in range(int(rate * seconds)):
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            start = time.perf_counter_ns()
            sock.sendall(request)
            reply = sock.recv(64)
            samples.append(time.perf_counter_ns() - start)
            assert reply == b"$-1\r\n", reply
            next_t += 1 / rate
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000
