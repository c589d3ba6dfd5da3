"""The in-flight watchdog's options on real sockets, and relaxing idle connections.

A replayable request runs with a tight TCP_USER_TIMEOUT; the connection goes back to the pool still tight and is relaxed by
the next non-replayable request or once idle for RELAX_AFTER.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Dict, List

import pytest
import requests
from servers import Action, HTTPTestServer, wait_until

import requests_azguard
from requests_azguard import GuardConfig, _watchdog
from requests_azguard._tcpinfo import FlowState

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_USER_TIMEOUT"), reason="the in-flight watchdog is Linux-only"
)

CFG = GuardConfig(
    breaker=False, keepalive_idle=25.0, keepalive_interval=7.0, user_timeout=20.0, ack_timeout=0.5
)
AT_REST = {"TCP_KEEPIDLE": 25, "TCP_KEEPINTVL": 7, "TCP_USER_TIMEOUT": 20000}


def _options(conn: Any) -> Dict[str, int]:
    return {
        name: conn.azguard_raw.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
        for name in AT_REST
    }


def _pooled(session: requests.Session, url: str) -> Any:
    manager = session.get_adapter(url).poolmanager  # type: ignore[attr-defined]
    conns = [
        c
        for key in manager.pools.keys()  # noqa: SIM118 - keys() is the safe snapshot
        for c in list(manager.pools[key].pool.queue)
        if c is not None and c.sock is not None
    ]
    assert len(conns) == 1, conns
    return conns[0]


def test_get_leaves_the_connection_tight_and_relax_restores_config(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    s.get(server.url, timeout=5)
    conn = _pooled(s, server.url)
    tight = _options(conn)
    # Only TCP_USER_TIMEOUT is tight: with it, the kernel would drop a flow
    # at the first unanswered keepalive probe, so keepalive stays as set.
    assert tight["TCP_KEEPIDLE"] == 25 and tight["TCP_KEEPINTVL"] == 7
    # max(ack_timeout, 3 base RTOs): at least the 600 ms Linux floor on loopback.
    assert 500 <= tight["TCP_USER_TIMEOUT"] <= 1000
    assert conn in _watchdog.pending()
    # Not yet idle long enough: nothing happens.
    assert _watchdog.relax_due(conn.azguard_idle_since + _watchdog.RELAX_AFTER / 2) == 0
    assert _options(conn) == tight
    assert _watchdog.relax_due(conn.azguard_idle_since + _watchdog.RELAX_AFTER) == 1
    assert _options(conn) == AT_REST
    assert conn not in _watchdog.pending()


def test_back_to_back_gets_cost_no_option_changes(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    s.get(server.url, timeout=5)
    conn = _pooled(s, server.url)
    calls = []
    raw = conn.azguard_raw

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(raw, name)

        def setsockopt(self, *args: Any) -> None:
            calls.append(args)
            raw.setsockopt(*args)

    conn.azguard_raw = Counting()
    for _ in range(5):
        s.get(server.url, timeout=5)
    assert calls == []
    assert server.accepted == 1


def test_a_request_that_cannot_be_replayed_runs_relaxed(server: HTTPTestServer) -> None:
    seen: Dict[str, int] = {}
    s = requests_azguard.mount(requests.Session(), CFG)
    s.get(server.url, timeout=5)
    conn = _pooled(s, server.url)
    assert _options(conn)["TCP_USER_TIMEOUT"] < AT_REST["TCP_USER_TIMEOUT"]

    # Read the options while the POST is on the wire, from the server's side
    # of the exchange: the request hook of the test server runs mid-request.
    original = server.behaviour

    def spy(req: Any) -> Any:
        seen.update(_options(conn))
        return original(req)

    server.behaviour = spy
    s.post(server.url, data=b"not replayable", timeout=5)
    assert seen == AT_REST
    assert not conn.azguard_tightened
    # The next GET tightens it again, on the same connection.
    server.behaviour = lambda req: (seen.update(_options(conn)), original(req))[1]
    s.get(server.url, timeout=5)
    assert seen["TCP_USER_TIMEOUT"] < AT_REST["TCP_USER_TIMEOUT"]
    assert server.accepted == 1


def test_a_claimed_connection_is_not_relaxed_under_a_request(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    s.get(server.url, timeout=5)
    conn = _pooled(s, server.url)
    _watchdog.claim(conn)  # as _get_conn does when a request takes it
    _watchdog.relax_all()
    assert conn.azguard_tightened
    assert conn not in _watchdog.pending()


def test_the_janitor_thread_relaxes_idle_connections_and_stops(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    s.get(server.url, timeout=5)
    conn = _pooled(s, server.url)
    assert conn.azguard_tightened
    # Real time here: this is the thread's own job.  Bounded, never a threshold.
    assert wait_until(lambda: not conn.azguard_tightened, timeout=10.0)
    assert _options(conn) == AT_REST
    assert wait_until(lambda: _watchdog._thread is None, timeout=30.0)


def test_watchdog_off_never_tightens(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG.replace(ack_timeout=None))
    s.get(server.url, timeout=5)
    conn = _pooled(s, server.url)
    assert not conn.azguard_tightened
    assert _options(conn) == AT_REST
    assert _watchdog.pending() == [] or conn not in _watchdog.pending()


def test_closed_connections_are_dropped_by_the_janitor(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    s.get(server.url, timeout=5)
    conn = _pooled(s, server.url)
    s.close()
    assert conn.sock is None
    _watchdog.relax_due(time.monotonic() + 60)
    assert conn not in _watchdog.pending()


# --- requests in flight ----------------------------------------------------------

ACTION = _watchdog.inflight_action


@pytest.mark.parametrize(
    "waited, unacked, probes, silent, probing, expected",
    [
        (0.5, 0, 0, 0.5, False, _watchdog.WAIT),  # too early to ask
        (1.2, 0, 0, 0.1, False, _watchdog.WAIT),  # the peer spoke just now
        (1.2, 0, 0, 1.2, False, _watchdog.PROBE),  # acked, then silence
        (5.0, 3, 0, 5.0, False, _watchdog.WAIT),  # unacked: TCP_USER_TIMEOUT's case
        (2.2, 0, 1, 2.2, True, _watchdog.WAIT),  # one lost probe proves nothing
        (3.1, 0, 2, 3.1, True, _watchdog.WAIT),  # nor two
        (3.1, 0, 3, 3.0, True, _watchdog.WAIT),  # the third not yet given its time
        (3.2, 0, 3, 3.2, True, _watchdog.ABORT),  # three unanswered, and time for it
        (9.0, 0, 0, 0.3, True, _watchdog.WAIT),  # a slow server answering probes
    ],
)
def test_inflight_action(
    waited: float, unacked: int, probes: int, silent: float, probing: bool, expected: str
) -> None:
    assert ACTION(waited, unacked, probes, silent, probing, 0.1) == expected


def _silent_once() -> Any:
    seen = []

    def behaviour(req: Any) -> Any:
        seen.append(req)
        return Action(kind="silence") if len(seen) == 1 else Action.ok()

    return behaviour, seen


def test_aborting_a_replayable_request_in_flight_replays_it() -> None:
    behaviour, seen = _silent_once()
    with HTTPTestServer(behaviour) as srv:
        s = requests_azguard.mount(requests.Session(), CFG)
        result: Dict[str, Any] = {}
        t = threading.Thread(target=lambda: result.update(r=s.get(srv.url, timeout=(2, 30))))
        t.start()
        assert wait_until(lambda: len(_watchdog.inflight()) == 1, timeout=10.0)
        conn = _watchdog.inflight()[0]
        assert (
            _watchdog.abort_inflight(conn.azguard_peer, time.monotonic(), "condemned_inflight") == 1
        )
        t.join(10)
        assert result["r"].status_code == 200
        assert len(seen) == 2 and seen[1].conn_id == 1  # replayed on a fresh connection
        assert _watchdog.inflight() == []


def test_a_post_in_flight_is_never_registered_so_never_aborted() -> None:
    behaviour, seen = _silent_once()
    with HTTPTestServer(behaviour) as srv:
        s = requests_azguard.mount(requests.Session(), CFG)
        errors: List[BaseException] = []

        def post() -> None:
            try:
                s.post(srv.url, data=b"once", timeout=(2, 1.0))
            except requests.RequestException as exc:
                errors.append(exc)

        t = threading.Thread(target=post)
        t.start()
        assert wait_until(lambda: len(seen) == 1, timeout=10.0)
        assert _watchdog.inflight() == []
        t.join(10)
    assert len(seen) == 1 and isinstance(errors[0], requests.ReadTimeout)


class _FakeFlowConn:
    """What ``sweep`` reads and calls, for stepping it with a fake clock."""

    def __init__(self, flow: FlowState) -> None:
        self.flow = flow
        self.azguard_probing = False
        self.aborted: List[str] = []

    def azguard_flow(self) -> FlowState:
        return self.flow

    def azguard_start_probing(self) -> None:
        self.azguard_probing = True

    def azguard_abort(self, reason: str) -> None:
        self.aborted.append(reason)


def test_sweep_probes_then_judges_a_silent_flow_stepped_by_its_clock() -> None:
    conn = _FakeFlowConn(FlowState(unacked=0, probes=0, silent=0.0, rtt=0.001, rttvar=0.0))
    # Far in the future of the real clock, so that the watchdog's own thread,
    # which watch() may start, never finds this request old enough to act on.
    t0 = time.monotonic() + 1e6
    _watchdog.watch(conn, t0)
    try:
        assert _watchdog.sweep(t0 + 0.5) == {_watchdog.PROBE: 0, _watchdog.ABORT: 0}
        conn.flow = conn.flow._replace(silent=1.1)
        assert _watchdog.sweep(t0 + 1.1)[_watchdog.PROBE] == 1 and conn.azguard_probing
        conn.flow = conn.flow._replace(probes=2, silent=2.5)
        assert _watchdog.sweep(t0 + 2.5)[_watchdog.ABORT] == 0
        conn.flow = conn.flow._replace(probes=3, silent=3.2)
        assert _watchdog.sweep(t0 + 3.2)[_watchdog.ABORT] == 1
        assert conn.aborted == ["blackhole"]
        assert conn not in _watchdog.inflight()  # claimed by the verdict
    finally:
        _watchdog.unwatch(conn)
