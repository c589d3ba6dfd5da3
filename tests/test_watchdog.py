"""The in-flight watchdog: its verdicts as a table, its sweep stepped by a fake
clock, and its effects on real sockets.

A replayable request is watched while it waits for its answer; nothing about
its socket changes unless the watchdog probes its flow, and the probe options
come off as soon as the answer is in.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import pytest
import requests
from pooled import only_pooled
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
PROBING = {"TCP_KEEPIDLE": 1, "TCP_KEEPINTVL": 1, "TCP_USER_TIMEOUT": 0}


def _options(conn: Any) -> Dict[str, int]:
    return {
        name: conn.azguard_raw.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
        for name in AT_REST
    }


class _Held:
    """A server behaviour that holds each request until the test lets it go,
    recording the client's options and the watchdog's registry meanwhile."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.arrived = threading.Event()

    def __call__(self, req: Any) -> Action:
        self.arrived.set()
        self.go.wait(10)
        return Action.ok()


def _in_background(call: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = call()
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    out["thread"] = threading.Thread(target=run)
    out["thread"].start()
    return out


def test_requests_in_flight_keep_the_configured_options(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    s.get(server.url, timeout=5)
    conn = only_pooled(s, server.url)
    assert _options(conn) == AT_REST
    held = _Held()
    server.behaviour = held
    run = _in_background(lambda: s.get(server.url, timeout=5))
    assert held.arrived.wait(10)
    assert wait_until(lambda: conn in _watchdog.inflight(), timeout=10.0)
    assert _options(conn) == AT_REST  # watched, and nothing changed on the socket
    held.go.set()
    run["thread"].join(10)
    assert run["result"].status_code == 200
    assert conn not in _watchdog.inflight()
    assert _options(conn) == AT_REST


def test_back_to_back_gets_cost_no_option_changes(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    s.get(server.url, timeout=5)
    conn = only_pooled(s, server.url)
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


def test_probe_options_come_off_when_the_answer_arrives(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    s.get(server.url, timeout=5)
    conn = only_pooled(s, server.url)
    held = _Held()
    server.behaviour = held
    run = _in_background(lambda: s.get(server.url, timeout=5))
    assert wait_until(lambda: conn in _watchdog.inflight(), timeout=10.0)
    # What the watchdog's thread does once the flow has been silent a while.
    assert conn.azguard_start_probing(lambda: conn in _watchdog.inflight())
    assert conn.azguard_probing and _options(conn) == PROBING
    held.go.set()
    run["thread"].join(10)
    assert run["result"].status_code == 200
    assert not conn.azguard_probing
    assert _options(conn) == AT_REST


def test_no_probing_once_the_request_has_its_answer(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    s.get(server.url, timeout=5)
    conn = only_pooled(s, server.url)
    # The sweep decided to probe, but the request was unwatched meanwhile.
    assert not conn.azguard_start_probing(lambda: False)
    assert not conn.azguard_probing and _options(conn) == AT_REST


def test_a_request_that_cannot_be_replayed_is_not_watched(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    s.get(server.url, timeout=5)
    conn = only_pooled(s, server.url)
    held = _Held()
    server.behaviour = held
    run = _in_background(lambda: s.post(server.url, data=b"not replayable", timeout=5))
    assert held.arrived.wait(10)
    assert conn not in _watchdog.inflight()
    assert not conn.azguard_watched
    held.go.set()
    run["thread"].join(10)
    assert run["result"].status_code == 200
    assert server.accepted == 1


def test_watchdog_off_watches_nothing(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG.replace(ack_timeout=None))
    s.get(server.url, timeout=5)
    conn = only_pooled(s, server.url)
    s.get(server.url, timeout=5)
    assert not conn.azguard_watched
    assert _options(conn) == AT_REST


# --- verdicts (pure) ---------------------------------------------------------------

ACTION = _watchdog.inflight_action
ANSWER = 0.05


def _seen(
    waited: float = 1.0,
    unacked: int = 0,
    retransmits: int = 0,
    sent_ago: float = 0.0,
    silent: float = 0.0,
    probes: int = 0,
    probing: bool = False,
    opened_ago: float = 100.0,
) -> _watchdog.Seen:
    flow = FlowState(unacked, probes, silent, 0.001, 0.0, retransmits, sent_ago)
    return _watchdog.Seen(waited, opened_ago, flow, probing)


def _stuck(retransmits: int, waited: float = 1.0) -> _watchdog.Seen:
    return _seen(waited, unacked=1, retransmits=retransmits, sent_ago=0.2, silent=waited)


def _queued(probes: int, waited: float = 1.0) -> _watchdog.Seen:
    flow = FlowState(0, probes, waited, 0.001, 0.0, 0, 0.2, notsent=120)
    return _watchdog.Seen(waited, 100.0, flow, False)


HEARD = _seen(0.01, silent=0.005)  # a sibling on an old flow that just heard from the peer
HEARD_ON_A_NEW_FLOW = _seen(0.01, silent=0.005, opened_ago=0.05)


@pytest.mark.parametrize(
    "me, siblings, expected",
    [
        # Unacknowledged bytes.
        (_stuck(2, waited=0.4), [_stuck(2)], _watchdog.WAIT),  # before ack_timeout
        (_stuck(1), [_stuck(2)], _watchdog.WAIT),  # one lost retransmission proves nothing
        (
            _seen(1.0, unacked=1, retransmits=2, sent_ago=0.01, silent=1.0),
            [_stuck(2)],
            _watchdog.WAIT,
        ),  # its latest retransmission not yet given its time
        (_stuck(2), [], _watchdog.WAIT),  # alone, two are not enough
        (_stuck(2), [_stuck(1)], _watchdog.ABORT),  # a sibling stuck too: the path died
        (_stuck(2), [_stuck(1), HEARD], _watchdog.WAIT),  # another flow hears the peer
        (_stuck(2), [_seen(0.5, silent=0.9)], _watchdog.WAIT),  # a silent sibling: no proof
        (_stuck(3), [], _watchdog.ABORT),  # alone, three unanswered
        (_stuck(3), [_seen(0.5, silent=0.9)], _watchdog.ABORT),  # nobody hears the peer
        (_stuck(3), [HEARD], _watchdog.WAIT),  # the path works: this flow was unlucky
        (_stuck(3), [HEARD_ON_A_NEW_FLOW], _watchdog.ABORT),  # only new flows work
        (_stuck(4), [HEARD], _watchdog.ABORT),  # dead alone, whatever the others do
        # Bytes that cannot leave (a local firewall drops them): the probe
        # timer's retries count as retransmissions; without queued bytes,
        # probes are keepalive's and belong to the silent case below.
        (_queued(2), [_queued(1)], _watchdog.ABORT),
        (_queued(2), [_queued(1), HEARD], _watchdog.WAIT),
        (_seen(0.8, probes=2, sent_ago=0.2, silent=0.8), [_queued(1)], _watchdog.WAIT),
        # Acknowledged, then silence.
        (_seen(0.5, silent=0.5), [], _watchdog.WAIT),  # too early to ask
        (_seen(1.2, silent=0.1), [], _watchdog.WAIT),  # the peer spoke just now
        (_seen(1.2, silent=1.2), [], _watchdog.PROBE),
        (_seen(2.2, probes=1, silent=2.2, probing=True), [], _watchdog.WAIT),  # one lost probe
        (_seen(3.1, probes=2, silent=3.1, probing=True), [], _watchdog.WAIT),  # nor two
        (_seen(3.1, probes=3, silent=3.0, probing=True), [], _watchdog.WAIT),  # not yet its time
        (_seen(3.2, probes=3, silent=3.2, probing=True), [], _watchdog.ABORT),
        (_seen(9.0, silent=0.3, probing=True), [], _watchdog.WAIT),  # a slow server answering
    ],
)
def test_inflight_action(
    me: _watchdog.Seen, siblings: Sequence[_watchdog.Seen], expected: str
) -> None:
    assert ACTION(me, siblings, ANSWER, 0.5) == expected


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
    # The server holds the POST until the test has looked, rather than the
    # test sitting out a read timeout (a second of real time per run): the
    # look then surely falls while the request is in flight.
    held = _Held()
    with HTTPTestServer(held) as srv:
        s = requests_azguard.mount(requests.Session(), CFG)
        run = _in_background(lambda: s.post(srv.url, data=b"once", timeout=(2, 10)))
        assert held.arrived.wait(10)
        assert _watchdog.inflight() == []
        # Condemning its peer, as above for a GET, leaves the POST alone.
        peer = ("127.0.0.1", srv.port)
        assert _watchdog.abort_inflight(peer, time.monotonic(), "condemned_inflight") == 0
        held.go.set()
        run["thread"].join(10)
    assert run["result"].status_code == 200
    assert len(srv.requests) == 1  # sent once, never replayed


class _FakeFlowConn:
    """What ``sweep`` reads and calls, for stepping it with a fake clock."""

    azguard_config = CFG

    def __init__(
        self, flow: FlowState, peer: Any = ("10.0.0.1", 80), opened_at: float = 0.0
    ) -> None:
        self.flow = flow
        self.azguard_peer = peer
        self.azguard_opened_at = opened_at
        self.azguard_probing = False
        self.aborted: List[str] = []

    def azguard_flow(self) -> Optional[FlowState]:
        return self.flow

    def azguard_start_probing(self, still_watched: Any) -> bool:
        self.azguard_probing = bool(still_watched())
        return self.azguard_probing

    def azguard_abort(self, reason: str) -> None:
        self.aborted.append(reason)


# Far in the future of the real clock, so that the watchdog's own thread,
# which watch() may start, never finds these requests old enough to act on.
T0 = time.monotonic() + 1e6


def test_sweep_probes_then_judges_a_silent_flow_stepped_by_its_clock() -> None:
    conn = _FakeFlowConn(FlowState(unacked=0, probes=0, silent=0.0, rtt=0.001, rttvar=0.0))
    _watchdog.watch(conn, T0)
    try:
        assert _watchdog.sweep(T0 + 0.5) == {_watchdog.PROBE: 0, _watchdog.ABORT: 0}
        conn.flow = conn.flow._replace(silent=1.1)
        assert _watchdog.sweep(T0 + 1.1)[_watchdog.PROBE] == 1 and conn.azguard_probing
        conn.flow = conn.flow._replace(probes=2, silent=2.5)
        assert _watchdog.sweep(T0 + 2.5)[_watchdog.ABORT] == 0
        conn.flow = conn.flow._replace(probes=3, silent=3.2)
        assert _watchdog.sweep(T0 + 3.2)[_watchdog.ABORT] == 1
        assert conn.aborted == ["blackhole"]
        assert conn not in _watchdog.inflight()  # claimed by the verdict
    finally:
        _watchdog.unwatch(conn)


def test_sweep_reads_young_siblings_as_evidence_stepped_by_its_clock() -> None:
    stuck = FlowState(1, 0, 0.9, 0.001, 0.0, 3, 0.2)
    heard = FlowState(0, 0, 0.001, 0.001, 0.0)
    old, young, other_peer = (
        _FakeFlowConn(stuck, opened_at=T0 - 50),
        _FakeFlowConn(heard, opened_at=T0 - 50),
        _FakeFlowConn(heard, peer=("10.0.0.2", 80), opened_at=T0 - 50),
    )
    _watchdog.watch(old, T0)
    _watchdog.watch(young, T0 + 0.89)  # far too young to be judged itself
    _watchdog.watch(other_peer, T0 + 0.89)
    try:
        # A flow to the same peer, opened before the stuck request, heard now.
        assert _watchdog.sweep(T0 + 0.9)[_watchdog.ABORT] == 0
        _watchdog.unwatch(young)
        # Evidence about another peer is none about this one.
        assert _watchdog.sweep(T0 + 0.9)[_watchdog.ABORT] == 1
        assert old.aborted == ["blackhole"] and other_peer.aborted == []
    finally:
        for conn in (old, young, other_peer):
            _watchdog.unwatch(conn)


def test_runtime_testing_steps_the_watchdog_thread_with_a_fake_clock() -> None:
    from requests_azguard import _runtime

    now = [T0]
    conn = _FakeFlowConn(FlowState(unacked=0, probes=3, silent=3.3, rtt=0.001, rttvar=0.0))
    conn.azguard_probing = True
    with _runtime.testing(monotonic=lambda: now[0]):
        _watchdog.watch(conn, T0)
        # The thread's own sweeps read the fake clock: nothing happens
        # until it is moved, however long the thread runs.
        assert conn.aborted == []
        now[0] = T0 + 3.3
        assert wait_until(lambda: conn.aborted == ["blackhole"], timeout=10.0)
    assert _watchdog.inflight() == []  # testing() leaves a clean process


def test_runtime_reset_forgets_every_piece_of_process_state() -> None:
    from requests_azguard import _runtime
    from requests_azguard._breaker_registry import registry
    from requests_azguard._condemn import condemn, condemned_at
    from requests_azguard._policy import Decision, decision_for, set_decision

    before = registry()
    condemn(("10.0.0.9", 80), 1.0)
    set_decision("ECONNRESET", Decision(evict=True, condemn=False, retry=False, blame="nobody"))
    conn = _FakeFlowConn(FlowState(0, 0, 0.0, 0.001, 0.0))
    _watchdog.watch(conn, T0)
    _runtime.reset()
    assert registry() is not before
    assert condemned_at(("10.0.0.9", 80)) is None
    assert decision_for("ECONNRESET").retry
    assert _watchdog.inflight() == []
