"""What validating a pooled connection before reuse costs, per reuse.

Run:  python benchmarks/bench_validation.py

Times ``pool._get_conn()`` + ``pool._put_conn()`` (the checkout urllib3 does
for every request on a kept-alive connection) on the guarded pool and on a
plain urllib3 pool, each holding one live connection to a local server.  The
guarded checkout is where the reuse checks run (peer closed, idle and age
limits, TCP_INFO, peer fingerprint).  Blocks alternate sides; the median of the
per-block ratios is reported, with the absolute microseconds.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import urllib3
from _common import interleaved, median_ratio, print_header, servers

import requests_azguard

BLOCKS = 15
REUSES = 20000


def checkout_loop(pool: Any) -> Callable[[], float]:
    """A block: REUSES checkouts of the one pooled connection; returns microseconds per reuse."""
    first = pool._get_conn()
    pool._put_conn(first)

    def block() -> float:
        get, put = pool._get_conn, pool._put_conn
        t0 = time.perf_counter()
        for _ in range(REUSES):
            conn = get()
            put(conn)
        elapsed = time.perf_counter() - t0
        conn = get()
        put(conn)
        if conn is not first or conn.sock is None:
            raise RuntimeError("the pooled connection was replaced: the benchmark timed reconnects")
        return elapsed / REUSES * 1e6

    return block


def main() -> int:
    print_header(
        f"bench_validation: pooled-connection checkout (_get_conn + _put_conn), guarded vs "
        f"plain urllib3, {BLOCKS} interleaved blocks of {REUSES} reuses"
    )
    with servers(1) as (url,):
        adapter = requests_azguard.AzGuardAdapter(requests_azguard.GuardConfig())
        guarded = adapter.poolmanager.connection_from_url(url)
        plain = urllib3.PoolManager().connection_from_url(url)
        for pool in (guarded, plain):
            # One real request leaves one live, idle connection in the pool.
            pool.urlopen("GET", "/prime", retries=False).data  # noqa: B018
        g_us, p_us = interleaved(BLOCKS, checkout_loop(guarded), checkout_loop(plain))
    g, p = statistics.median(g_us), statistics.median(p_us)
    print(f"pool classes: guarded {type(guarded).__name__}, plain {type(plain).__name__}")
    print(f"plain   {p:7.2f} us per reuse (median of blocks)")
    print(f"guarded {g:7.2f} us per reuse (median of blocks)")
    print(f"added by validation: {g - p:.2f} us per reuse")
    print(f"ratio guarded/plain: {median_ratio(g_us, p_us):.2f}  (median of per-block ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
