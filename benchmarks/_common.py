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
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

__all__ = [
    "Blocks",
    "Workers",
    "fmt_ratio",
    "interleaved",
    "machine",
    "median_ci",
    "median_ratio",
    "pin_client",
    "print_header",
    "servers",
    "threaded_rate",
    "timed",
]

_SERVER_CHILD = """
import json, os, sys
if len(sys.argv) > 3:  # before any thread starts: threads inherit the mask
    os.sched_setaffinity(0, {int(sys.argv[3])})
from requests_azguard.tools.drill_server import DrillServer
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
        usable = _usable_cpus or len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    return (
        f"machine: {_cpu_model()}, {cores} cores ({usable} usable); "
        f"{platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, requests {requests.__version__}, "
        f"urllib3 {urllib3.__version__}"
    )


# CPU the server child is pinned to, once pin_client() has pinned this process,
# and how many CPUs were usable before that.
_server_cpu: Optional[int] = None
_usable_cpus = 0


def pin_client() -> str:
    """Pin this process to one CPU and the servers started later to another.

    Unpinned, the scheduler moves the client and the server between the two
    CPUs of a small machine, and per-block throughput then varies by about
    +-5% between identical sides; pinned, by about +-1.5%.  Both sides get the
    same placement, so the comparison stays fair.  Call it before starting
    any thread (threads inherit the mask).  Returns a line for the header.
    """
    global _server_cpu, _usable_cpus
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return "pinning: not available on this platform"
    _usable_cpus = len(cpus)
    if len(cpus) < 2:
        return "pinning: only one usable CPU, client and server share it"
    os.sched_setaffinity(0, {cpus[0]})
    _server_cpu = cpus[1]
    return f"pinning: client on CPU {cpus[0]}, server on CPU {cpus[1]}"


def print_header(title: str, *notes: str) -> None:
    print(title)
    print(machine())
    for note in notes:
        print(note)
    print()


@contextlib.contextmanager
def servers(count: int = 1, delay: float = 0.0) -> Iterator[List[str]]:
    """``count`` keep-alive servers on loopback in a child process; yields their URLs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, "-c", _SERVER_CHILD, str(count), str(delay)]
    if _server_cpu is not None:
        argv.append(str(_server_cpu))
    proc = subprocess.Popen(
        argv,
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


class Workers:
    """``threads`` threads that run ``call`` in timed blocks, started once.

    Starting threads for every block would add their start-up to each block;
    these wait on a barrier between blocks and cost nothing meanwhile.
    """

    def __init__(self, call: Callable[[], object], threads: int) -> None:
        self._call = call
        self._start = threading.Barrier(threads + 1)
        self._end = threading.Barrier(threads + 1)
        self._counts = [0] * threads
        self._errors: List[BaseException] = []
        self._deadline = 0.0
        self._closing = False
        self._threads = [
            threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def _work(self, i: int) -> None:
        call, clock = self._call, time.perf_counter
        while True:
            self._start.wait()
            if self._closing:
                return
            n, deadline = 0, self._deadline
            try:
                while clock() < deadline:
                    call()
                    n += 1
            except BaseException as exc:
                self._errors.append(exc)
            self._counts[i] = n
            self._end.wait()

    def block(self, seconds: float) -> float:
        """Run one block of ``seconds``; returns calls per second."""
        start = time.perf_counter()
        self._deadline = start + seconds
        self._start.wait()
        self._end.wait()
        elapsed = time.perf_counter() - start
        if self._errors:
            raise RuntimeError(f"a request failed during the benchmark: {self._errors[0]!r}")
        return sum(self._counts) / elapsed

    def close(self) -> None:
        self._closing = True
        self._start.wait()
        for t in self._threads:
            t.join()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def threaded_rate(call: Callable[[], object], threads: int, seconds: float) -> float:
    """``threads`` threads repeat ``call`` for ``seconds``; returns calls per second."""
    with Workers(call, threads) as workers:
        return workers.block(seconds)


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
