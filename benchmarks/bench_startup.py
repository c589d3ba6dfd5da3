"""Start-up cost of the AZGUARD_AUTO hook (``requests_azguard_autostart.pth``).

Usage: python benchmarks/bench_startup.py [--pairs 400] [--block 20] [--json]

Run it with the interpreter of an environment where requests-azguard is
installed (``pip install .`` or ``pip install -e .``).

Method (why it is honest):

1. **.pth present vs absent, AZGUARD_AUTO unset** -- the number the budget
   (< 1 ms) is about.  One environment cannot have the file and not have it, and
   ``python -S`` / ``-I`` change far more than the file (no site at all / no
   user site and no PYTHON* variables), so two throwaway venvs are made from the
   same base interpreter with ``--without-pip``; they differ in exactly one
   thing: the shipped ``.pth`` file copied into one site-packages.  Both run
   ``python -c pass`` with AZGUARD_AUTO removed from the environment,
   interleaved in blocks in ABBA order (so drift such as CPU frequency or page
   cache warms both sides alike).  Reported: the median of each side, the ratio
   of medians, and the median of per-block differences of medians with a 95%
   bootstrap interval; the verdict is "inconclusive" when the machine is too
   noisy for that interval to confirm the budget.
2. **The same, in process** -- ``site.addsitedir()`` on a directory holding only
   the ``.pth`` vs an empty directory: what site does for the file (list, open,
   read, exec), free of process start-up noise.
3. **AZGUARD_AUTO=1 vs unset** in this environment (informative): ``python -c
   pass`` pays for loading the hook and arming a meta-path finder; ``python -c
   "import requests"`` also pays for ``install()`` (importing the package).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

PTH_NAME = "requests_azguard_autostart.pth"
BUDGET_MS = 1.0


def shipped_pth() -> Path:
    for d in [*site.getsitepackages(), site.getusersitepackages()]:
        path = Path(d, PTH_NAME)
        if path.is_file():
            return path
    sys.exit(f"{PTH_NAME} is not installed for {sys.executable}: pip install -e . first")


def env_without_auto(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZGUARD_")}
    env.update(extra)
    return env


def make_venv(root: Path, name: str) -> Tuple[Path, Path]:
    """A bare venv; returns (python, site-packages)."""
    target = root / name
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120
    )
    python = target / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    out = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return python, Path(out.stdout.strip())


def time_run(argv: List[str], env: Dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, timeout=60, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def interleaved(
    a: Callable[[], float], b: Callable[[], float], pairs: int, block: int
) -> Dict[str, Any]:
    """Run ``a`` and ``b`` ``pairs`` times each, in blocks, ABBA-ordered."""
    times_a: List[float] = []
    times_b: List[float] = []
    block_diffs: List[float] = []
    a()  # warm both (page cache, .pyc files)
    b()
    done = 0
    flip = False
    while done < pairs:
        n = min(block, pairs - done)
        order = [(b, times_b), (a, times_a)] if flip else [(a, times_a), (b, times_b)]
        medians = {}
        for fn, sink in order:
            batch = [fn() for _ in range(n)]
            sink.extend(batch)
            # Medians: one run stalled by a busy machine must not swing a block.
            medians[id(sink)] = statistics.median(batch)
        block_diffs.append(medians[id(times_b)] - medians[id(times_a)])
        done += n
        flip = not flip
    med_a = statistics.median(times_a)
    med_b = statistics.median(times_b)
    low, high = _bootstrap_median_ci(block_diffs)
    return {
        "runs_each": pairs,
        "median_a_ms": med_a * 1e3,
        "median_b_ms": med_b * 1e3,
        "ratio_b_over_a": med_b / med_a,
        "median_block_diff_ms": statistics.median(block_diffs) * 1e3,
        "ci95_low_ms": low * 1e3,
        "ci95_high_ms": high * 1e3,
        "mean_block_diff_ms": statistics.fmean(block_diffs) * 1e3,
        "stdev_block_diff_ms": (
            statistics.stdev(block_diffs) * 1e3 if len(block_diffs) > 1 else 0.0
        ),
        "sem_block_diff_ms": (
            statistics.stdev(block_diffs) * 1e3 / len(block_diffs) ** 0.5
            if len(block_diffs) > 1
            else 0.0
        ),
        "blocks": len(block_diffs),
    }


def _bootstrap_median_ci(values: List[float], rounds: int = 2000) -> Tuple[float, float]:
    """95% percentile-bootstrap interval of the median (fixed seed: reproducible)."""
    if len(values) < 2:
        return values[0], values[0]
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]


def in_process_addsitedir(pth: Path, loops: int) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory() as with_dir, tempfile.TemporaryDirectory() as empty_dir:
        shutil.copy(pth, Path(with_dir, PTH_NAME))
        saved_path = list(sys.path)
        saved_env = os.environ.pop("AZGUARD_AUTO", None)
        try:

            def per_call(directory: str) -> float:
                best = float("inf")
                for _ in range(5):
                    started = time.perf_counter()
                    for _ in range(loops):
                        site.addsitedir(directory)
                    best = min(best, (time.perf_counter() - started) / loops)
                return best

            empty = per_call(empty_dir)
            with_pth = per_call(with_dir)
        finally:
            sys.path[:] = saved_path
            if saved_env is not None:
                os.environ["AZGUARD_AUTO"] = saved_env
    return {
        "loops": loops,
        "empty_dir_us": empty * 1e6,
        "with_pth_us": with_pth * 1e6,
        "pth_cost_us": (with_pth - empty) * 1e6,
    }


# Runs in a fresh interpreter started with AZGUARD_AUTO unset: times the .pth
# line once with it unset and once set (loading _autostart, arming the finder).
_HOOK_TIMER = """
import os, sys, time
line = open(sys.argv[1]).read()
t0 = time.perf_counter(); exec(line); t1 = time.perf_counter()
os.environ["AZGUARD_AUTO"] = "1"
t2 = time.perf_counter(); exec(line); t3 = time.perf_counter()
assert "requests_azguard._autostart" in sys.modules and "requests" not in sys.modules
print((t1 - t0) * 1e6, (t3 - t2) * 1e6)
"""


def in_process_hook(pth: Path, runs: int) -> Dict[str, Any]:
    unset: List[float] = []
    armed: List[float] = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _HOOK_TIMER, str(pth)],
            env=env_without_auto(),
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        a, b = (float(x) for x in out.stdout.split())
        unset.append(a)
        armed.append(b)
    return {
        "runs": runs,
        "unset_line_us": statistics.median(unset),
        "set_line_us": statistics.median(armed),
    }


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=400, help="runs of each side (default 400)")
    parser.add_argument("--block", type=int, default=20, help="runs per block (default 20)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    pth = shipped_pth()
    results: Dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "pth": str(pth),
    }
    env = env_without_auto()
    with tempfile.TemporaryDirectory(prefix="azguard-bench-") as tmp:
        root = Path(tmp)
        py_without, _ = make_venv(root, "without")
        py_with, site_with = make_venv(root, "with")
        shutil.copy(pth, site_with / PTH_NAME)
        results["pth_present_vs_absent"] = interleaved(
            lambda: time_run([str(py_without), "-c", "pass"], env),
            lambda: time_run([str(py_with), "-c", "pass"], env),
            args.pairs,
            args.block,
        )
    results["in_process_addsitedir"] = in_process_addsitedir(pth, loops=2000)
    results["in_process_hook"] = in_process_hook(pth, runs=30)
    quick = max(20, args.pairs // 4)
    auto_env = env_without_auto(AZGUARD_AUTO="1")
    results["auto_set_vs_unset_pass"] = interleaved(
        lambda: time_run([sys.executable, "-c", "pass"], env),
        lambda: time_run([sys.executable, "-c", "pass"], auto_env),
        quick,
        args.block,
    )
    results["auto_set_vs_unset_import_requests"] = interleaved(
        lambda: time_run([sys.executable, "-c", "import requests"], env),
        lambda: time_run([sys.executable, "-c", "import requests"], auto_env),
        quick,
        args.block,
    )
    # Process start-up noise on a busy machine is milliseconds, so the verdict
    # needs both: the end-to-end difference and the exact in-process cost.
    e2e = results["pth_present_vs_absent"]
    exact_ms = results["in_process_addsitedir"]["pth_cost_us"] / 1e3
    results["budget_ms"] = BUDGET_MS
    if exact_ms >= BUDGET_MS or e2e["ci95_low_ms"] >= BUDGET_MS:
        results["verdict"] = "over"
    elif e2e["ci95_high_ms"] < BUDGET_MS:
        results["verdict"] = "within"
    else:
        # The exact cost is under budget but this machine is too noisy for
        # the end-to-end interval to confirm it: run more pairs.
        results["verdict"] = "inconclusive"
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _report(results)
    return 1 if results["verdict"] == "over" else 0


def _report(r: Dict[str, Any]) -> None:
    print(f"python {r['python']} ({r['executable']})")
    rows = [
        ("python -c pass: .pth present vs absent, AUTO unset", "pth_present_vs_absent"),
        ("python -c pass: AZGUARD_AUTO=1 vs unset", "auto_set_vs_unset_pass"),
        (
            "python -c 'import requests': AZGUARD_AUTO=1 vs unset",
            "auto_set_vs_unset_import_requests",
        ),
    ]
    for title, key in rows:
        x = r[key]
        print(
            f"{title}\n"
            f"  median A {x['median_a_ms']:.2f} ms, B {x['median_b_ms']:.2f} ms, "
            f"B/A {x['ratio_b_over_a']:.3f}; per-block B-A: median {x['median_block_diff_ms']:+.3f} ms "
            f"(95% CI {x['ci95_low_ms']:+.3f} .. {x['ci95_high_ms']:+.3f}), "
            f"mean {x['mean_block_diff_ms']:+.3f} ms (sem {x['sem_block_diff_ms']:.3f}), "
            f"{x['blocks']} blocks, {x['runs_each']} runs each"
        )
    p = r["in_process_addsitedir"]
    print(
        f"site.addsitedir in process: empty dir {p['empty_dir_us']:.1f} us, with the .pth "
        f"{p['with_pth_us']:.1f} us -> the .pth costs {p['pth_cost_us']:.1f} us"
    )
    h = r["in_process_hook"]
    print(
        f"the .pth line itself, fresh interpreter (median of {h['runs']}): AUTO unset "
        f"{h['unset_line_us']:.1f} us, AUTO=1 {h['set_line_us']:.1f} us (load hook, arm finder)"
    )
    print(
        f"start-up overhead with AZGUARD_AUTO unset vs the {r['budget_ms']:g} ms budget: "
        f"{r['verdict']}"
    )


if __name__ == "__main__":
    sys.exit(main())
