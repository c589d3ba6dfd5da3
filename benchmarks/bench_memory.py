"""Memory a guarded Session holds for 100 hosts, against plain requests.

Run:  python benchmarks/bench_memory.py

Each block builds one Session, sends one request to each of 100 local
keep-alive servers (in a child process, fresh servers for every block so
per-host state kept process-wide, such as circuit breakers, is counted
every time) and, with every connection still pooled, measures what Python
allocated since the block began (tracemalloc, after a garbage collection).
Blocks alternate sides; the median of the per-block ratios is reported.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tracemalloc
from typing import Callable, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import requests
from _common import interleaved, median_ratio, print_header, servers
from requests.adapters import HTTPAdapter

import requests_azguard

HOSTS = 100
BLOCKS = 6


def plain_session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    # pool_connections: keep a pool per host instead of requests' default LRU of 10.
    s.mount("http://", HTTPAdapter(pool_connections=HOSTS))
    return s


def guarded_session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return requests_azguard.mount(s, requests_azguard.GuardConfig(), pool_connections=HOSTS)


def pooled(session: requests.Session) -> int:
    adapter = session.get_adapter("http://127.0.0.1/")
    pools = adapter.poolmanager.pools  # type: ignore[attr-defined]
    live = 0
    for key in list(pools.keys()):
        # The queue is padded with None up to maxsize; count connected sockets.
        live += sum(1 for c in list(pools[key].pool.queue) if c is not None and c.sock is not None)
    return live


def block(make: Callable[[], requests.Session], held: List[int]) -> Callable[[], float]:
    def run() -> float:
        with servers(HOSTS) as urls:
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            session = make()
            for url in urls:
                r = session.get(url + "/m", timeout=10)
                r.content  # noqa: B018
                r.close()
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            held.append(pooled(session))
            session.close()
        return float(used)

    return run


def main() -> int:
    print_header(
        f"bench_memory: a Session holding pooled connections to {HOSTS} local servers, "
        f"guarded vs plain, {BLOCKS} interleaved blocks (tracemalloc)"
    )
    held_g: List[int] = []
    held_p: List[int] = []
    # A warm-up pair: imports and one-time caches are not per-host costs.
    block(guarded_session, [])()
    block(plain_session, [])()
    g, p = interleaved(BLOCKS, block(guarded_session, held_g), block(plain_session, held_p))
    if set(held_g) != {HOSTS} or set(held_p) != {HOSTS}:
        raise RuntimeError(f"expected {HOSTS} pooled connections, got {held_g} / {held_p}")
    gm, pm = statistics.median(g), statistics.median(p)
    print(f"plain   {pm / 1024:8.1f} KiB  ({pm / HOSTS / 1024:.2f} KiB per host)")
    print(f"guarded {gm / 1024:8.1f} KiB  ({gm / HOSTS / 1024:.2f} KiB per host)")
    print(f"added by the guard: {(gm - pm) / HOSTS / 1024:.2f} KiB per host")
    print(f"ratio guarded/plain: {median_ratio(g, p):.2f}  (median of per-block ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
