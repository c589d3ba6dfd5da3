"""Python bytecodes executed per request: guarded against plain, same run.

Run:  python benchmarks/bench_bytecodes.py [--requests N]

A count, not a timing: ``sys.settrace`` with ``f_trace_opcodes`` counts every
bytecode the client thread executes while it sends N requests to a local
keep-alive server (in a child process), for a guarded Session and a plain one,
and likewise for ``requests_azguard.PoolManager`` and ``urllib3.PoolManager``.
The count does not move with the machine's load, so it shows what a change
to the hot path adds or removes where ``bench_throughput.py`` cannot tell a
point from noise.  It leaves out C code (socket calls, the parsers written in
C), so its ratio is not the throughput ratio: read it beside that one.  The
functions whose counts differ most are listed, so that a reader can see where
the guard's cost sits.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from types import FrameType
from typing import Any, Callable, Counter, Dict, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import requests
import urllib3
from _common import print_header, servers
from requests.adapters import HTTPAdapter

import requests_azguard

WARM = 50
Where = Tuple[str, str]  # (file name, function name)


def count(call: Callable[[], object], n: int) -> Counter[Where]:
    """Bytecodes executed by ``call()`` n times, by function."""
    for _ in range(WARM):
        call()
    seen: Counter[Where] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Optional[Callable[..., Any]]:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            seen[(os.path.basename(code.co_filename), code.co_name)] += 1
        return trace

    sys.settrace(trace)
    try:
        for _ in range(n):
            call()
    finally:
        sys.settrace(None)
    return seen


def clients(url: str) -> Dict[str, Tuple[Callable[[], object], Callable[[], object]]]:
    """Scenario name -> (guarded call, plain call)."""
    plain = requests.Session()
    plain.trust_env = False
    plain.mount("http://", HTTPAdapter())
    guarded = requests.Session()
    guarded.trust_env = False
    requests_azguard.mount(guarded, requests_azguard.GuardConfig())
    pm_plain = urllib3.PoolManager()
    pm_guarded = requests_azguard.PoolManager(config=requests_azguard.GuardConfig())
    target = url + "/t"
    return {
        "requests Session": (
            lambda: guarded.get(target, timeout=10).content,
            lambda: plain.get(target, timeout=10).content,
        ),
        "urllib3 PoolManager": (
            lambda: pm_guarded.request("GET", target, timeout=10).data,
            lambda: pm_plain.request("GET", target, timeout=10).data,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per side")
    parser.add_argument("--top", type=int, default=12, help="functions listed per scenario")
    args = parser.parse_args()
    print_header(
        "Bytecodes per request, guarded vs plain (deterministic; C code not counted)",
        f"{args.requests} requests per side after {WARM} warm-up requests",
    )
    n = args.requests
    with servers(1, 0.0) as (url,):
        for name, (guarded, plain) in clients(url).items():
            g, p = count(guarded, n), count(plain, n)
            g_total, p_total = sum(g.values()) / n, sum(p.values()) / n
            print(
                f"{name:<22} plain {p_total:7.0f}   guarded {g_total:7.0f}   "
                f"difference {g_total - p_total:+6.0f}   ratio {p_total / g_total:.3f}"
            )
            diff = {k: (g[k] - p[k]) / n for k in set(g) | set(p)}
            for (file, func), d in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
                print(f"    {d:+7.1f}  {file}:{func}")
    print("\n(ratio plain/guarded: 1.000 means the guard adds no Python work per request)")


if __name__ == "__main__":
    main()
