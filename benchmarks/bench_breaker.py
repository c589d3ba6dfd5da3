"""What the circuit breaker costs, against plain requests in the same run.

Run:  python benchmarks/bench_breaker.py [--blocks N] [--seconds S]

1. Throughput: four threads share one Session against a local keep-alive
   server (a child process, so it does not share our GIL) that takes 20 ms
   per request.  Sides, in alternating block order: plain requests
   (``HTTPAdapter``); ``AzGuardAdapter`` with the breaker on; the same with
   the breaker off (so the breaker's own share is visible); and plain requests
   wrapped in ``pybreaker.CircuitBreaker.call()``, the design this library
   avoids because pybreaker holds one lock across the whole call.  Each block
   counts requests completed in a fixed time; ratios are medians of per-block
   ratios against plain requests.
2. Fail-fast latency: after a refused host trips its breaker, 1,000 more
   requests through ``Session.get`` (and straight through ``adapter.send``)
   must fail with ``CircuitOpenError``; p50/p99 are printed, as is the count
   of sockets created meanwhile (an audit hook; must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import requests
import urllib3
from requests.adapters import HTTPAdapter

import requests_azguard
from requests_azguard import CircuitOpenError, GuardConfig
from requests_azguard._breaker_registry import reset_breakers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import threaded_rate

THREADS = 4
DELAY = 0.020

_SERVER_CHILD = """
import json, sys
from requests_azguard.tools.drill_server import DrillServer
server = DrillServer(delay=float(sys.argv[1]))
print(json.dumps(server.port), flush=True)
sys.stdin.read()  # serve until the parent closes our stdin
"""


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"machine: {model}, {os.cpu_count()} cores; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, requests {requests.__version__}, "
        f"urllib3 {urllib3.__version__}"
    )


class Server:
    def __init__(self, delay: float) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER_CHILD, str(delay)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server did not start")
        self.url = f"http://127.0.0.1:{json.loads(line)}"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def session(adapter: HTTPAdapter) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.mount("http://", adapter)
    return s


def sides() -> Dict[str, Callable[[str], object]]:
    import pybreaker

    # Retries off everywhere: the comparison is about the breaker, not replays.
    plain = session(HTTPAdapter(pool_maxsize=THREADS, max_retries=0))
    on = session(requests_azguard.AzGuardAdapter(GuardConfig(retries=0), pool_maxsize=THREADS))
    off = session(
        requests_azguard.AzGuardAdapter(GuardConfig(retries=0, breaker=False), pool_maxsize=THREADS)
    )
    naive_session = session(HTTPAdapter(pool_maxsize=THREADS, max_retries=0))
    naive = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

    def get(s: requests.Session) -> Callable[[str], object]:
        return lambda url: s.get(url, timeout=10).content

    return {
        "plain requests": get(plain),
        "breaker on": get(on),
        "breaker off": get(off),
        "pybreaker.call()": lambda url: naive.call(get(naive_session), url),
    }


def block(fn: Callable[[str], object], url: str, seconds: float) -> float:
    return threaded_rate(lambda: fn(url), THREADS, seconds)


def throughput(blocks: int, seconds: float) -> float:
    server = Server(DELAY)
    try:
        fns = sides()
        names = list(fns)
        for fn in fns.values():  # warm every pool
            for _ in range(THREADS * 2):
                fn(server.url + "/warm")
        rates: Dict[str, List[float]] = {n: [] for n in names}
        for i in range(blocks):
            # Rotate the order so no side always runs first or last.
            for name in names[i % len(names) :] + names[: i % len(names)]:
                rates[name].append(block(fns[name], server.url + "/t", seconds))
    finally:
        server.close()
    base = rates["plain requests"]
    print(f"throughput, {THREADS} threads sharing one Session, server {DELAY * 1000:.0f} ms:")
    result = 0.0
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(rates[name], base))
        if name == "breaker on":
            result = ratio
        print(
            f"  {name:<18} {statistics.median(rates[name]):7.1f} req/s   "
            f"x plain requests: {ratio:.3f}   per block: "
            + " ".join(f"{a / b:.3f}" for a, b in zip(rates[name], base))
        )
    return result


_sockets: List[Tuple[str, object]] = []
_audit_on = [False]


def _audit(event: str, args: Tuple[object, ...]) -> None:
    if _audit_on[0] and event in ("socket.__new__", "socket.connect"):
        _sockets.append((event, args))


def percentile(values: List[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1)]


def fail_fast(count: int = 1000) -> None:
    reset_breakers()
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    url = f"http://127.0.0.1:{refused.getsockname()[1]}/x"
    adapter = requests_azguard.AzGuardAdapter(GuardConfig(retries=0))
    s = session(adapter)
    for _ in range(adapter.azguard_config.breaker_fail_max):
        try:
            s.get(url, timeout=2)
        except (requests.RequestException, urllib3.exceptions.HTTPError):
            pass
    prepared = s.prepare_request(requests.Request("GET", url))
    sys.addaudithook(_audit)
    for label, call in (
        ("Session.get", lambda: s.get(url, timeout=2)),
        ("adapter.send", lambda: adapter.send(prepared, timeout=2)),
    ):
        latencies = []
        _sockets.clear()
        _audit_on[0] = True
        for i in range(count + 100):
            t0 = time.perf_counter()
            try:
                call()
            except CircuitOpenError:
                pass
            else:
                raise RuntimeError("the breaker let a request through")
            if i >= 100:  # the first 100 warm caches up
                latencies.append(time.perf_counter() - t0)
        _audit_on[0] = False
        print(
            f"  open breaker via {label:<13} {count} requests (after 100 warm-up): p50 "
            f"{percentile(latencies, 50) * 1e6:6.1f} us   p99 "
            f"{percentile(latencies, 99) * 1e6:6.1f} us   max {max(latencies) * 1e6:7.1f} us   "
            f"sockets created/connected: {len(_sockets)}"
        )
    refused.close()
    reset_breakers()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    print("bench_breaker: circuit breaker cost against plain requests, same run")
    print(machine())
    print()
    t0 = time.perf_counter()
    # Fail-fast first: a quiet process, no server child still shutting down.
    print("fail fast:")
    fail_fast()
    print()
    ratio = throughput(args.blocks, args.seconds)
    print()
    verdict = "ok" if ratio >= 0.97 else "BELOW 0.97"
    print(
        f"breaker on / plain requests: {ratio:.3f} ({verdict}); took {time.perf_counter() - t0:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
