"""boto3 under the conntrack migration: guarded (AZGUARD_AUTO=1, no code
change) beside plain boto3, same fault, same run.  Needs root, nftables,
conntrack and the SDK extra; skips otherwise (the kernel tools fail under
AZGUARD_REQUIRE_CHAOS=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from chaos import need_chaos

pytestmark = pytest.mark.chaos

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "boto3_load.py"
READ_TIMEOUT = 5.0


def run_boto3(auto: str, **params: Any) -> Dict[str, Any]:
    need_chaos()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZGUARD_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    if auto:
        env["AZGUARD_AUTO"] = auto
    proc = subprocess.run(
        [sys.executable, str(SCENARIO), json.dumps(params)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: Dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_boto3_migration_guarded_beside_plain() -> None:
    for name in ("boto3", "moto.server", "waitress"):
        pytest.importorskip(name)
    params = dict(threads=4, duration=6.0, fault_after=1.5, read_timeout=READ_TIMEOUT)
    guarded = run_boto3("1", **params)
    plain = run_boto3("", **params)
    print(json.dumps({"guarded": guarded, "plain": plain}, indent=1))
    assert guarded["guarded"] is True and plain["guarded"] is False
    for side in (guarded, plain):
        assert side["fault"]["flows"] >= 1, side  # the fault black-holed live flows
    # Guarded: no request lost, none waits anywhere near the read timeout.
    # A get_object whose headers arrived just before the fault hands the
    # caller a StreamingBody that the fault then stalls: that body is the
    # caller's stream, which nothing may replay or cut short (plain boto3 is
    # exposed the same way), so it is counted apart, and only it may fail.
    assert guarded["failed"] == guarded["failed_in_body_read"], guarded["errors"]
    assert guarded["failed_in_body_read"] <= 4, guarded  # at most one in flight per thread
    assert guarded["after_fault"] > 100, guarded
    assert guarded["max_request_s"] <= 3.0, guarded
    # Plain boto3 on the same fault: the pooled flows stall for the read timeout.
    assert plain["max_s"] >= READ_TIMEOUT, plain
    assert plain["stalled_over_1s"] >= 1, plain
