"""The chaos harness: run a scenario in its own process and network namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, Optional

from conftest import need

from requests_azguard.tools import netns

SCENARIO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios", "chaos_load.py")


def need_chaos() -> None:
    need(
        netns.unavailable_reason() is None,
        f"chaos harness unavailable: {netns.unavailable_reason()}",
    )


def run_scenario(
    process_timeout: float = 120.0, env: Optional[Dict[str, str]] = None, **params: Any
) -> Dict[str, Any]:
    need_chaos()
    proc = subprocess.run(
        [sys.executable, SCENARIO, json.dumps(params)],
        capture_output=True,
        text=True,
        timeout=process_timeout,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})},
    )
    if proc.returncode != 0:
        raise AssertionError(f"scenario {params} failed:\n{proc.stderr[-4000:]}")
    result: Dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
