"""Shared helpers for the benchmarks.

Every benchmark compares the guard with plain requests/urllib3 in the same
run, in alternating blocks (guarded first in one block, plain first in the
next), and reports the median of the per-block ratios: slow drifts of the
machine (CPU frequency, a noisy neighbour) hit both sides alike.

Servers run in a child process so that their work does not share the
benchmark's interpreter (and its GIL) with the client being measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator, List, Sequence, Tuple

__all__ = [
    "Blocks",
    "fmt_ratio",
    "interleaved",
    "machine",
    "median_ratio",
    "print_header",
    "servers",
    "timed",
]

_SERVER_CHILD = """
import json, sys
from requests_azguard._drill import DrillServer
count, delay = int(sys.argv[1]), float(sys.argv[2])
servers = [DrillServer(delay=delay) for _ in range(count)]
print(json.dumps([s.port for s in servers]), flush=True)
sys.stdin.read()  # serve until the parent closes our stdin
"""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """One line naming what the numbers were measured on."""
    import requests
    import urllib3

    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    return (
        f"machine: {_cpu_model()}, {cores} cores ({usable} usable); "
        f"{platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, requests {requests.__version__}, "
        f"urllib3 {urllib3.__version__}"
    )


def print_header(title: str) -> None:
    print(title)
    print(machine())
    print()


@contextlib.contextmanager
def servers(count: int = 1, delay: float = 0.0) -> Iterator[List[str]]:
    """``count`` keep-alive servers on loopback in a child process; yields their URLs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER_CHILD, str(count), str(delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server process did not start")
        ports = json.loads(line)
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


Blocks = Tuple[List[float], List[float]]  # (guarded values, plain values), one per block


def interleaved(
    blocks: int,
    guarded: Callable[[], float],
    plain: Callable[[], float],
) -> Blocks:
    """Run ``blocks`` pairs, alternating which side goes first."""
    g_vals: List[float] = []
    p_vals: List[float] = []
    for i in range(blocks):
        if i % 2 == 0:
            g_vals.append(guarded())
            p_vals.append(plain())
        else:
            p_vals.append(plain())
            g_vals.append(guarded())
    return g_vals, p_vals


def threaded_rate(call: Callable[[], object], threads: int, seconds: float) -> float:
    """``threads`` threads repeat ``call`` for ``seconds``; returns calls per second."""
    counts = [0] * threads
    errors: List[BaseException] = []
    start = time.perf_counter()
    deadline = start + seconds

    def work(i: int) -> None:
        n = 0
        try:
            while time.perf_counter() < deadline:
                call()
                n += 1
        except BaseException as exc:
            errors.append(exc)
        counts[i] = n

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise RuntimeError(f"a request failed during the benchmark: {errors[0]!r}")
    return sum(counts) / (time.perf_counter() - start)


def median_ratio(guarded: Sequence[float], plain: Sequence[float]) -> float:
    """Median of the per-block ratios guarded / plain."""
    return statistics.median(g / p for g, p in zip(guarded, plain))


def median_ci(
    ratios: Sequence[float], level: float = 0.95, rounds: int = 2000
) -> Tuple[float, float]:
    """A bootstrap confidence interval of the median ratio (fixed seed: the
    same blocks always give the same interval)."""
    import random

    rng = random.Random(0)
    values = list(ratios)
    medians = sorted(statistics.median(rng.choice(values) for _ in values) for _ in range(rounds))
    lo = medians[int((1 - level) / 2 * rounds)]
    hi = medians[int((1 + level) / 2 * rounds) - 1]
    return lo, hi


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.3f}x"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
