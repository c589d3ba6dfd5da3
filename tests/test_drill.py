"""``azguard drill``: real drills (short) against the embedded server and real faults."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from typing import Any, Dict, List, Tuple

import pytest
import requests
from conftest import need, need_root, need_tool
from servers import wait_until

from requests_azguard import GuardConfig
from requests_azguard.tools import drill, netns
from requests_azguard.tools.drill import error_label, format_report
from requests_azguard.tools.drill_result import SIDE_FIELDS, DrillOptions, DrillResult, SideResult
from requests_azguard.tools.drill_server import DrillServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY_KEYS = {
    "requests", "failed", "p50_s", "p99_s", "max_s", "failures_by_error", "retries",
    "dead_flow_failures", "circuit_open", "p50_ok_s", "p99_ok_s",
}  # fmt: skip


def _drill_process(*args: str) -> Dict[str, Any]:
    """``azguard drill ... --json`` in its own process (a namespace it enters
    must not be this one); both sides already checked for consistency."""
    proc = subprocess.run(
        [sys.executable, "-m", "requests_azguard", "drill", *args, "--json", "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data: Dict[str, Any] = json.loads(proc.stdout)
    _check_side(data["plain"])
    _check_side(data["guarded"])
    return data


def _drill_json(capsys: pytest.CaptureFixture[str], *args: str) -> Tuple[Dict[str, Any], str]:
    code = drill.main([*args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out), err


def _check_side(side: Dict[str, Any]) -> None:
    assert set(side) >= SUMMARY_KEYS
    assert side["requests"] > 0
    assert sum(side["failures_by_error"].values()) == side["failed"]
    assert side["p50_s"] <= side["p99_s"] <= side["max_s"]


@pytest.mark.parametrize("fault", ["reset", "fin"])
def test_proxy_faults_fail_plain_requests_and_not_the_guarded_session(
    capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    # A slow server keeps each thread's request in flight ~95% of the time, so
    # the fault finds requests to break on both sides.
    data, err = _drill_json(
        capsys, "--fault", fault, "--duration", "3", "--threads", "3", "--fault-at", "1",
        "--server-delay", "50ms",
    )  # fmt: skip
    plain, guarded = data["plain"], data["guarded"]
    _check_side(plain)
    _check_side(guarded)
    assert data["fault"]["kind"] == fault
    # The fault hit the kept-alive flows of both sides; each had to reconnect.
    assert data["fault"]["flows_hit"] >= 2
    assert plain["connections"] > 3 and guarded["connections"] > 3
    # Requests in flight at the fault die on plain requests...
    assert plain["failed"] >= 1, plain
    assert all(label.startswith("ConnectionError(") for label in plain["failures_by_error"])
    # ...and are retried on a fresh connection by the guard.
    assert guarded["failed"] == 0, guarded
    assert guarded["retries"] >= 1
    # Progress went to stderr while stdout stayed one JSON object.
    assert f"FAULT {fault}" in err
    assert "done" in err


def test_blackhole_drill_in_a_private_namespace() -> None:
    need_root()
    for tool in ("nft", "conntrack", "ip"):
        need_tool(tool)
    data = _drill_process(
        "--fault", "blackhole", "--duration", "3", "--fault-at", "1", "--threads", "2",
        "--timeout", "1,2",
    )  # fmt: skip
    plain, guarded = data["plain"], data["guarded"]
    assert data["fault"]["flows_hit"] >= 2
    # Plain requests waits for its read timeout on every black-holed flow.
    assert plain["failures_by_error"].get("ReadTimeout", 0) >= 1, plain
    assert guarded["failed"] == 0, guarded
    # The in-flight watchdog saw the dead flows (ack timeout 1s < read timeout 2s).
    assert guarded["blackholes_detected"] >= 1, guarded


def test_blackhole_without_privileges_explains_itself_and_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        netns, "unavailable_reason", lambda: "needs root (a private network namespace)"
    )

    def must_not_run() -> None:
        raise AssertionError("entered a namespace without the privileges")

    monkeypatch.setattr(netns, "enter_private_netns", must_not_run)
    assert drill.main(["--fault", "blackhole", "--duration", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "needs root" in err and "--fault reset" in err


def test_blackhole_as_a_non_root_process_exits_2() -> None:
    """A real unprivileged process: a user namespace makes geteuid() 65534."""
    unshare = need_tool("unshare")
    probe = subprocess.run(
        [unshare, "--user", sys.executable, "-c", "import os; print(os.geteuid())"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    need(probe.returncode == 0 and probe.stdout.strip() != "0", "cannot create a user namespace")
    proc = subprocess.run(
        [unshare, "--user", sys.executable, "-m", "requests_azguard", "drill",
         "--fault", "blackhole", "--duration", "1"],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--fault reset" in lines[0], proc.stderr


def _png_size(path: str) -> Tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_plot_writes_a_png_timeline(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    png = str(tmp_path / "timeline.png")
    code = drill.main(
        ["--fault", "fin", "--duration", "2", "--threads", "1", "--quiet", "--plot", png]
    )
    capsys.readouterr()
    assert code == 0
    width, height = _png_size(png)
    assert width > 400 and height > 300


def test_plot_without_matplotlib_is_a_clear_error_before_the_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    monkeypatch.setattr(drill, "run_drill", _must_not_run)
    png = str(tmp_path / "t.png")
    assert drill.main(["--fault", "reset", "--plot", png]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "matplotlib" in err and "requests-azguard[plot]" in err
    assert not os.path.exists(png)


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("the drill ran although its options were rejected")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--threads", "0"], "--threads"),
        (["--timeout", "soon"], "--timeout"),
        (["--duration", "0"], "--duration"),
        (["--fault", "earthquake"], "--fault"),
        (["--duration", "5", "--fault-at", "6"], "--fault-at"),
        (["--method", "BREW"], "--method"),
    ],
)
def test_bad_options_are_named_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: List[str],
    named: str,
) -> None:
    monkeypatch.setattr(drill, "run_drill", _must_not_run)
    assert drill.main(argv) == 2
    _, err = capsys.readouterr()
    assert named in err


def test_bad_guard_environment_is_named_and_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drill, "run_drill", _must_not_run)
    monkeypatch.setenv("AZGUARD_RETRIES", "lots")
    assert drill.main(["--fault", "reset"]) == 2
    _, err = capsys.readouterr()
    assert "AZGUARD_RETRIES" in err and "'lots'" in err


def test_error_labels_name_the_root_cause() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    with pytest.raises(requests.ConnectionError) as refused:
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert error_label(refused.value) == "ConnectionError(ECONNREFUSED)"
    with DrillServer(delay=1.0) as srv, pytest.raises(requests.ReadTimeout) as slow:
        requests.get(srv.url + "/slow", timeout=(2, 0.05))
    assert error_label(slow.value) == "ReadTimeout"
    assert error_label(ValueError("x")) == "ValueError"


def test_server_echoes_the_target_and_counts_connections_per_side() -> None:
    with DrillServer() as srv:
        sessions = {side: requests.Session() for side in ("plain", "guarded")}
        for side, s in sessions.items():
            for n in range(3):
                r = s.post(
                    f"{srv.url}/{side}/{n}", data=b"body", headers={"X-Drill-Side": side}, timeout=5
                )
                assert r.content == f"/{side}/{n}".encode()
            s.close()
        assert srv.connections_by_side == {"plain": 1, "guarded": 1}
        # The server counts a response after sendall() returns, which can be
        # after the client already read it: wait for its thread, not a time.
        assert wait_until(lambda: srv.served == 6)
        assert srv.served == 6


def _result(plain: List[Any], guarded: List[Any]) -> DrillResult:
    def side(records: List[Any], guard: bool) -> SideResult:
        return SideResult(
            records=records,
            connections=2,
            urllib3_retries=0,
            retries_by_reason={"read": 1} if guard else None,
            evictions_by_reason={"peer closed": 2} if guard else None,
            blackholes_detected=0 if guard else None,
        )

    return DrillResult(
        options=DrillOptions(fault="reset", duration=4.0, method="POST"),
        fault_at=1.5,
        flows_hit=4,
        plain=side(plain, False),
        guarded=side(guarded, True),
        config=GuardConfig(),
    )


def test_report_counts_percentiles_and_failures_from_the_records() -> None:
    lat = [0.001 * i for i in range(1, 101)]  # 1..100 ms
    plain = [(i * 0.01, v, None) for i, v in enumerate(lat)]
    plain[50] = (1.5, 0.02, "ConnectionError(ECONNRESET)")
    plain[60] = (1.6, 5.0, "ReadTimeout")
    guarded = [(0.5, 0.004, None), (1.5, 1.2, "ConnectionError(RemoteDisconnected)")]
    data = _result(plain, guarded).to_json()
    p, g = data["plain"], data["guarded"]
    assert p["requests"] == 100 and p["failed"] == 2
    assert p["failures_by_error"] == {"ConnectionError(ECONNRESET)": 1, "ReadTimeout": 1}
    assert p["max_s"] == 5.0
    assert p["p50_s"] == pytest.approx(0.049)  # 51 and 61 ms were replaced
    assert p["p99_s"] == pytest.approx(0.100)
    assert p["retries"] == 0 and p["evictions"] is None
    assert g["retries"] == 1 and g["evictions"] == 2
    text = format_report(_result(plain, guarded))
    rows = {line[:30].strip(): line[30:].split() for line in text.splitlines() if line[:2] != "  "}
    assert rows["failed"] == ["2", "1"]
    assert "ReadTimeout" in text and "5.00 s" in text
    # A POST that failed on the guarded side gets the "nothing written" explanation.
    assert "not idempotent" in text


@pytest.mark.parametrize("fault", ["reset", "fin", "blackhole"])
def test_post_drill_fails_no_more_than_plain_and_opens_no_breaker(fault: str) -> None:
    """A POST in flight when its flow dies cannot be replayed by either side;
    the guard must not add failures of its own (a breaker that blamed the
    host for dead flows did: hundreds of CircuitOpenError)."""
    if fault == "blackhole":
        need_root()
        for tool in ("nft", "conntrack", "ip"):
            need_tool(tool)
    threads = 3
    # A slow server keeps each thread's request in flight nearly all the time,
    # so the fault finds one in flight per thread on both sides.
    data = _drill_process(
        "--fault", fault, "--method", "POST", "--duration", "8", "--fault-at", "2",
        "--threads", str(threads), "--server-delay", "300ms", "--timeout", "2,3",
    )  # fmt: skip
    plain, guarded = data["plain"], data["guarded"]
    assert plain["failed"] >= 1, plain  # the fault really hit requests in flight
    assert guarded["circuit_open"] == 0, guarded
    # At most the requests in flight at the fault, each on a dead flow.
    assert guarded["failed"] <= threads, guarded
    assert guarded["dead_flow_failures"] == guarded["failed"], guarded
    assert guarded["ok"] >= plain["ok"] * 0.5, (plain, guarded)  # it kept working after


def test_every_json_field_of_a_side_is_documented() -> None:
    side = SideResult(
        records=[(0.0, 0.001, None), (0.1, 2.0, "ReadTimeout (dead flow)")],
        connections=1,
        urllib3_retries=0,
        retries_by_reason={},
        evictions_by_reason={},
        blackholes_detected=0,
    )
    summary = side.summary(0.05)
    assert set(summary) == set(SIDE_FIELDS)
    # Successes and failures have percentiles of their own.
    assert (summary["p50_ok_s"], summary["p50_failed_s"]) == (0.001, 2.0)
    assert summary["dead_flow_failures"] == 1
