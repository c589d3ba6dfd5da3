"""Throughput of a guarded Session against plain requests, and of a guarded
``urllib3.PoolManager`` against plain urllib3, same run, interleaved.

Run:  python benchmarks/bench_throughput.py [--only requests|urllib3]

Scenarios against a local keep-alive server in a child process: 1 client
thread; 4 threads; 4 threads against a server that takes 20 ms per request;
and a control, plain requests against plain requests, which shows how far
two identical sides drift apart in this harness.  Each block runs one side
for a fixed time and counts completed requests; blocks alternate sides and
the median of the per-block ratios (guarded / plain requests per second) is
reported with a bootstrap 95% confidence interval.  The urllib3 scenarios
(what boto3 and the kubernetes client reach through ``install()``) compare
``requests_azguard.PoolManager`` with ``urllib3.PoolManager``, with their own
plain-vs-plain control.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import requests
import urllib3
from _common import Workers, interleaved, median_ci, median_ratio, pin_client, print_header, servers
from requests.adapters import HTTPAdapter

import requests_azguard

# Many short blocks rather than a few long ones: this machine is shared and
# its speed drifts within seconds; blocks of 0.1 s alternating sides see the
# same drift, and 120 of them narrow the interval to about +-0.5%.
BLOCKS = 120
BLOCK_SECONDS = 0.1
CONTROL_BLOCKS = 60


def plain_session(threads: int) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.mount("http://", HTTPAdapter(pool_maxsize=threads))
    return s


def guarded_session(threads: int) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return requests_azguard.mount(s, requests_azguard.GuardConfig(), pool_maxsize=threads)


def scenario(name: str, threads: int, delay: float, control: bool = False) -> float:
    blocks = CONTROL_BLOCKS if control else BLOCKS
    with servers(1, delay) as (url,):
        g = plain_session(threads) if control else guarded_session(threads)
        p = plain_session(threads)
        for s in (g, p):  # warm the pools
            for _ in range(threads * 2):
                s.get(url + "/warm", timeout=10).content  # noqa: B018

        def loop(session: requests.Session) -> Workers:
            def get() -> None:
                session.get(url + "/t", timeout=10).content  # noqa: B018 (read it, as a caller would)

            return Workers(get, threads)

        with loop(g) as g_workers, loop(p) as p_workers:
            g_rates, p_rates = interleaved(
                blocks,
                lambda: g_workers.block(BLOCK_SECONDS),
                lambda: p_workers.block(BLOCK_SECONDS),
            )
        g.close()
        p.close()
    return report(name, g_rates, p_rates, control)


def report(name: str, g_rates: List[float], p_rates: List[float], control: bool) -> float:
    """Print one scenario's line: both rates and the median ratio with its CI."""
    ratio = median_ratio(g_rates, p_rates)
    lo, hi = median_ci([a / b for a, b in zip(g_rates, p_rates)])
    sides = "plain (B)" if control else "guarded"
    print(
        f"{name:<30} plain {statistics.median(p_rates):6.0f} req/s   "
        f"{sides} {statistics.median(g_rates):6.0f} req/s   "
        f"ratio {ratio:.3f}  (95% CI of the median {lo:.3f}-{hi:.3f}, {len(g_rates)} blocks)"
    )
    return ratio


def urllib3_scenario(name: str, threads: int, delay: float, control: bool = False) -> float:
    blocks = CONTROL_BLOCKS if control else BLOCKS
    with servers(1, delay) as (url,):
        plain_b = urllib3.PoolManager(maxsize=threads)
        g = (
            plain_b
            if control
            else requests_azguard.PoolManager(
                maxsize=threads, config=requests_azguard.GuardConfig()
            )
        )
        p = urllib3.PoolManager(maxsize=threads)
        for pm in (g, p):  # warm the pools
            for _ in range(threads * 2):
                pm.request("GET", url + "/warm", timeout=10).data  # noqa: B018

        def loop(pm: urllib3.PoolManager) -> Workers:
            def get() -> None:
                pm.request("GET", url + "/t", timeout=10).data  # noqa: B018

            return Workers(get, threads)

        with loop(g) as g_workers, loop(p) as p_workers:
            g_rates, p_rates = interleaved(
                blocks,
                lambda: g_workers.block(BLOCK_SECONDS),
                lambda: p_workers.block(BLOCK_SECONDS),
            )
        g.clear()
        p.clear()
    return report(name, g_rates, p_rates, control)


def main() -> int:
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else ""
    pinning = pin_client()  # before any thread starts
    print_header(
        f"bench_throughput: guarded vs plain (requests Session, urllib3 PoolManager), "
        f"{BLOCKS} interleaved blocks of {BLOCK_SECONDS:g}s per side and scenario",
        pinning,
    )
    t0 = time.perf_counter()
    if only in ("", "requests"):
        scenario("1 thread", 1, 0.0)
        scenario("4 threads", 4, 0.0)
        scenario("4 threads, 20 ms server", 4, 0.020)
        scenario("control: plain vs plain, 1 thr", 1, 0.0, control=True)
    if only in ("", "urllib3"):
        urllib3_scenario("urllib3 PoolManager, 1 thread", 1, 0.0)
        urllib3_scenario("urllib3 PoolManager, 4 threads", 4, 0.0)
        urllib3_scenario("urllib3 control, 1 thr", 1, 0.0, control=True)
    print(
        "\n(ratio guarded/plain; > 1: guarded is faster.  The control compares two plain"
        f" sessions: its distance from 1.000 is the harness's own error.  Took"
        f" {time.perf_counter() - t0:.0f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
