"""Kernel-level chaos: each scenario in its own private network namespace.

The migration event is the project's reproduction: conntrack forgets every
flow to the server port while ``ct state invalid drop`` is in force, so
existing flows are black-holed and new flows work.  Needs root, nftables,
conntrack; skips otherwise (fails under AZGUARD_REQUIRE_CHAOS=1).
"""

from __future__ import annotations

import pytest
from chaos import run_scenario

pytestmark = pytest.mark.chaos


@pytest.mark.parametrize("threads", [4, 8, 16])
def test_migration_during_traffic(threads: int) -> None:
    r = run_scenario(
        scenario="migrate", threads=threads, duration=6.0, fault_after=1.5, timeout=[2, 10]
    )
    assert r["fault"]["flows"] >= 1, "the fault black-holed no flow"
    assert r["failed"] == 0, r["errors"]
    assert r["after_fault"] > 100
    # The flows in flight were black-holed and detected: not luck.
    assert r["counts"].get("blackhole", 0) >= 1, r["counts"]
    # One event, one condemnation; the siblings in flight are rescued by it.
    assert r["counts"].get("condemned", 0) == 1, r["counts"]
    assert r["p99_after_s"] <= 1.0, r
    assert r["max_s"] <= 1.3, r


def test_plain_requests_stalls_on_the_same_migration() -> None:
    """The control: the harness really black-holes flows."""
    r = run_scenario(
        scenario="migrate", threads=4, duration=3.0, fault_after=1.0, timeout=[2, 3], plain=True
    )
    assert r["failed"] >= 1
    assert r["max_s"] >= 2.9


def test_migration_while_idle() -> None:
    config = {
        "keepalive_idle": 1,
        "keepalive_interval": 1,
        "keepalive_count": 2,
        "user_timeout": None,
    }
    r = run_scenario(
        scenario="idle", threads=4, idle_wait=4.0, requests=20, config=config, keep_results=True
    )
    # Four concurrent requests fill the pool with up to four connections.
    assert 1 <= r["fault"]["flows"] <= 4
    assert r["failed"] == 0, r["errors"]
    after = [x for x in r["results"] if x["start"] >= r["fault"]["resume"]]
    first = min(after, key=lambda x: x["start"])
    assert first["end"] - first["start"] <= 0.05, first
    assert any(k.startswith("evicted:") for k in r["counts"]), r["counts"]


def test_random_loss_no_errors_no_verdicts() -> None:
    # Eight threads share the Session so that 2,000 requests, each lost packet
    # costing a 200 ms retransmission timeout, fit in a short test.
    r = run_scenario(scenario="loss", requests=2000, threads=8, loss_percent=5, timeout=[2, 10])
    assert r["requests"] == 2000
    assert r["fault"]["dropped_packets"] > 0, "the loss rule dropped nothing"
    assert r["failed"] == 0, r["errors"]
    assert "blackhole" not in r["counts"], r["counts"]
    assert not any(k.startswith("retry:") for k in r["counts"]), r["counts"]


def test_slow_answers_under_loss_are_never_judged() -> None:
    # Requests wait 2-3 s, long enough to be probed; at 3 % loss a probe or
    # its answer is sometimes lost, which must never make a verdict.
    r = run_scenario(scenario="lossy_slow", requests=50, threads=10, loss_percent=3)
    assert r["fault"]["dropped_packets"] > 0, "the loss rule dropped nothing"
    assert r["failed"] == 0, r["errors"]
    assert r["fault"]["server_hits"] == 50  # none replayed
    assert "blackhole" not in r["counts"], r["counts"]


def test_streamed_downloads_under_loss_complete() -> None:
    # A stream=True body is the caller's: nothing may end it sooner than
    # plain requests would (20 MB each, read slowly).
    r = run_scenario(scenario="lossy_stream", requests=20, threads=5, loss_percent=3)
    assert r["fault"]["dropped_packets"] > 0, "the loss rule dropped nothing"
    assert r["requests"] == 20
    assert r["failed"] == 0, r["errors"]
    assert r["fault"]["server_hits"] == 20


def test_a_post_in_flight_on_a_condemned_peer_is_not_aborted() -> None:
    r = run_scenario(scenario="post_sibling", timeout=[2, 5])
    fault = r["fault"]
    assert r["counts"].get("condemned") == 1, r["counts"]  # the GET's verdict
    assert fault["delivered_p1"] == 1, fault  # exactly once at the server
    # It waited for its own read timeout, as plain requests would.
    assert fault["post"] == "ReadTimeout", fault
    assert "retry:condemned_inflight" not in r["counts"], r["counts"]


def test_a_lone_request_whose_answer_is_black_holed_is_judged_by_probes() -> None:
    # Its bytes were acknowledged, then the path died: nothing unacknowledged
    # for TCP_USER_TIMEOUT to see, and no sibling to rescue it.
    r = run_scenario(scenario="lone", timeout=[2, 30])
    assert r["fault"]["flows"] == 1
    assert r["failed"] == 0, r["errors"]
    assert r["counts"].get("blackhole") == 1, r["counts"]
    assert r["counts"].get("retry:idempotent") == 1, r["counts"]
    assert r["fault"]["server_hits"] == 3  # warm-up, the lost answer, the replay
    assert r["max_s"] <= 4.0, r


def test_a_lone_slow_request_under_loss_is_not_judged() -> None:
    r = run_scenario(
        scenario="lone", timeout=[2, 30], loss_percent=3, server_delay=2.2, requests=10
    )
    assert r["failed"] == 0, r["errors"]
    assert "blackhole" not in r["counts"], r["counts"]
    assert r["accepted_connections"] == 1  # nothing replayed


def test_slow_server_is_never_misjudged() -> None:
    r = run_scenario(scenario="slow", server_delay=5.0, requests=1, timeout=[2, 10])
    assert r["failed"] == 0, r["errors"]
    assert r["max_s"] >= 5.0
    assert not any(k.startswith("evicted:") for k in r["counts"]), r["counts"]
    assert "blackhole" not in r["counts"]
    assert not any(k.startswith("retry:") for k in r["counts"]), r["counts"]  # no abort


def test_response_stopping_mid_body_is_detected_and_replayed() -> None:
    r = run_scenario(scenario="midbody", timeout=[2, 20])
    assert r["fault"]["flows"] == 1
    assert r["failed"] == 0, r["errors"]
    assert r["counts"].get("blackhole") == 1, r["counts"]
    assert r["max_s"] < 10, "detected by probes, not by the read timeout"


def test_unreachable_and_dns_rows() -> None:
    import json
    import os
    import subprocess
    import sys

    from chaos import need_chaos

    need_chaos()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios", "errno_rows.py")
    proc = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rows["EHOSTUNREACH"][:2] == ["EHOSTUNREACH", "EHOSTUNREACH"], rows
    assert rows["ENETUNREACH"][:2] == ["ENETUNREACH", "ENETUNREACH"], rows
    assert rows["dns"][0] == "dns", rows
    # Unreachable routes and DNS failures fail fast and count for the breaker.
    assert all(r[2] and r[3] for r in rows.values()), rows


def test_legacy_script_survives_migration_with_autostart_only() -> None:
    """A script that only does ``requests.Session()`` (no code change), guarded by
    AZGUARD_AUTO=1 through the .pth start-up hook; the control run without it fails."""
    guarded = run_scenario(
        scenario="migrate",
        threads=4,
        duration=5.0,
        fault_after=1.5,
        timeout=[2, 10],
        plain=True,
        env={"AZGUARD_AUTO": "1"},
    )
    assert guarded["fault"]["flows"] >= 1
    assert guarded["failed"] == 0, guarded["errors"]
    assert guarded["counts"].get("blackhole", 0) >= 1, "the guard was not active"


def test_post_into_a_black_holed_flow_is_not_replayed_and_says_so() -> None:
    """The bytes were written: the POST is not replayed (it is not delivered
    either), it surfaces as BlackHoleError (a ConnectionError and a ReadTimeout),
    the flow's death does not open the host's breaker, and the next request
    goes out on a fresh connection."""
    r = run_scenario(scenario="post", timeout=[2, 3])
    fault = r["fault"]
    assert fault["flows"] == 1
    assert fault["post"] == "BlackHoleError"
    # Plain requests would say ReadTimeout or ConnectionError: both catch it.
    assert fault["post_is_connection_error"] and fault["post_is_read_timeout"]
    assert fault["delivered_p1"] == 0
    assert fault["breaker_states"] == ["closed"]
    assert r["failed"] == 0, r["errors"]  # the request after it
    assert r["counts"].get("blackhole") == 1


def test_black_holed_host_opens_the_breaker_and_later_requests_touch_no_socket() -> None:
    """Every packet to the host is dropped (new flows too): two connect timeouts
    (AZGUARD_TIMEOUT_FAIL_FAST) open its breaker, and 1,000 further requests
    fail with CircuitOpenError without creating or connecting a socket.  Their
    latency is reported by the scenario, not asserted (no timing thresholds)."""
    r = run_scenario(scenario="deadhost", timeout=[0.3, 1])
    fault = r["fault"]
    assert fault["tripping"].get("ConnectTimeout") == 2, fault
    assert fault["open_errors"] == 1000
    assert fault["sockets_touched"] == 0
