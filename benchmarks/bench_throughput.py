"""Throughput of a guarded Session against plain requests, same run, interleaved.

Run:  python benchmarks/bench_throughput.py

Three scenarios against a local keep-alive server in a child process:
1 client thread; 4 threads; 4 threads against a server that takes 20 ms per
request.  Each block runs one side for a fixed time and counts completed
requests; blocks alternate sides and the median of the per-block ratios
(guarded / plain requests per second) is reported.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import requests
from _common import interleaved, median_ci, median_ratio, print_header, servers, threaded_rate
from requests.adapters import HTTPAdapter

import requests_azguard

# Many short blocks rather than a few long ones: this machine is shared, and
# its speed drifts over seconds; short alternating blocks see the same drift.
BLOCKS = 40
BLOCK_SECONDS = 0.3


def plain_session(threads: int) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.mount("http://", HTTPAdapter(pool_maxsize=threads))
    return s


def guarded_session(threads: int) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return requests_azguard.mount(s, requests_azguard.GuardConfig(), pool_maxsize=threads)


def rate(session: requests.Session, url: str, threads: int) -> Callable[[], float]:
    """A block: ``threads`` threads loop GETs for BLOCK_SECONDS; returns requests/s."""

    def get() -> None:
        session.get(url, timeout=10).content  # noqa: B018  (read the body, as a caller would)

    def block() -> float:
        return threaded_rate(get, threads, BLOCK_SECONDS)

    return block


def scenario(name: str, threads: int, delay: float) -> float:
    with servers(1, delay) as (url,):
        g, p = guarded_session(threads), plain_session(threads)
        for s in (g, p):  # warm the pools
            for _ in range(threads * 2):
                s.get(url + "/warm", timeout=10).content  # noqa: B018
        g_rates, p_rates = interleaved(
            BLOCKS, rate(g, url + "/t", threads), rate(p, url + "/t", threads)
        )
        g.close()
        p.close()
    ratio = median_ratio(g_rates, p_rates)
    lo, hi = median_ci([a / b for a, b in zip(g_rates, p_rates)])
    print(
        f"{name:<26} plain {statistics.median(p_rates):6.0f} req/s   "
        f"guarded {statistics.median(g_rates):6.0f} req/s   "
        f"ratio guarded/plain {ratio:.3f}  (95% CI of the median {lo:.3f}-{hi:.3f}, "
        f"{len(g_rates)} blocks)"
    )
    return ratio


def main() -> int:
    print_header(
        f"bench_throughput: guarded Session vs plain requests, {BLOCKS} interleaved blocks "
        f"of {BLOCK_SECONDS:g}s per side and scenario"
    )
    t0 = time.perf_counter()
    scenario("1 thread", 1, 0.0)
    scenario("4 threads", 4, 0.0)
    scenario("4 threads, 20 ms server", 4, 0.020)
    print(f"\n(ratio > 1: guarded is faster; took {time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
