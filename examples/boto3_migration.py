"""boto3 with and without the guard, side by side, under the same migration fault.

Run (root, nftables and conntrack; pip install -e '.[sdk]'):

    python examples/boto3_migration.py [--read-timeout 20] [--threads 4] [--duration 8]

Each side runs ``tests/scenarios/boto3_load.py`` in a fresh interpreter and a
private network namespace: moto's S3 under waitress on 127.0.0.1, N threads
looping put_object/get_object on one S3 client, and mid-run ``conntrack -D``
black-holes every pooled flow.  The guarded side differs only by
``AZGUARD_AUTO=1`` in its environment: the program does not change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "tests")
SCENARIO = os.path.join(TESTS, "scenarios", "boto3_load.py")


def side(auto: bool, params: Dict[str, Any]) -> Dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZGUARD_")}
    env["PYTHONPATH"] = os.pathsep.join([TESTS, *sys.path])
    if auto:
        env["AZGUARD_AUTO"] = "1"
    proc = subprocess.run(
        [sys.executable, SCENARIO, json.dumps(params)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"scenario failed:\n{proc.stderr[-3000:]}")
    result: Dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--read-timeout", type=float, default=20.0, help="botocore read_timeout")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    params = {
        "threads": args.threads,
        "duration": max(args.duration, args.read_timeout + 3),
        "fault_after": 1.5,
        "read_timeout": args.read_timeout,
    }
    plain = side(False, params)
    guarded = side(True, params)
    if args.json:
        print(json.dumps({"plain": plain, "guarded": guarded}, indent=2))
        return 0
    print(
        f"boto3 S3 put/get from {args.threads} threads, conntrack migration at 1.5 s, "
        f"read_timeout={args.read_timeout:g}s, botocore retries: standard, 3 attempts\n"
    )
    print(f"{'':<9}{'requests':>9}{'failed':>8}{'>1s':>6}{'retries':>9}{'p50':>9}{'p99':>9}{'max':>9}")
    for name, r in (("plain", plain), ("guarded", guarded)):
        print(
            f"{name:<9}{r['requests']:>9}{r['failed']:>8}{r['stalled_over_1s']:>6}"
            f"{r['botocore_retries']:>9}{r['p50_s']:>8.3f}s{r['p99_s']:>8.3f}s{r['max_s']:>8.3f}s"
        )
    for name, r in (("plain", plain), ("guarded", guarded)):
        for error in r["errors"]:
            print(f"  {name}: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
