"""Validation before reuse: the pure verdict, and the checks on live pooled sockets.

The verdict (``reuse_verdict``) is tested on explicit ``ReuseFacts`` and an
explicit ``now``.  Everything else goes through a mounted Session against the
real-socket servers of ``tests/servers.py``: the server closes (FIN or RST) an
idle pooled connection, or the test ages, condemns or "moves" one, and the
next request must leave on a fresh connection with the eviction reported.
Connections are made to look old by moving their recorded times back, or by
injecting the clock ``_connection`` reads; nothing here sleeps to age them.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
import types
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from pooled import only_pooled
from recorder import Recorder
from servers import Action, HTTPTestServer, rst_close, wait_until

import requests_azguard
from requests_azguard import GuardConfig, _connection, _dns, _validation
from requests_azguard._condemn import condemn, condemned_at, reset_condemnations
from requests_azguard._tcpinfo import (
    CLOSE_WAIT,
    DEGRADED,
    ESTABLISHED,
    HEALTHY,
    IS_LINUX,
    UNHEALTHY,
    TcpVitals,
    grade,
    read_vitals,
)
from requests_azguard._validation import (
    DEEP_CHECK_AFTER,
    REASONS,
    ReuseFacts,
    gather,
    reuse_verdict,
)

linux_only = pytest.mark.skipif(not IS_LINUX, reason="TCP_INFO is Linux-only")

PEER = ("127.0.0.1", 8080)
T0 = 1000.0  # opened_at in the pure cases; ``now`` is always given explicitly
LIVE = TcpVitals(state=ESTABLISHED, retransmits=0, probes=0, unacked=0, rtt=0.0001, rttvar=0.00005)
CFG = GuardConfig(breaker=False, max_idle=60.0, max_age=600.0)


# -- fixtures and helpers -------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_guard_state() -> Iterator[None]:
    # Condemnations and the DNS cache are process-wide: a verdict or a cached
    # answer left by one test would decide the next one's reuse.
    reset_condemnations()
    _dns.default_cache.clear()
    yield
    reset_condemnations()
    _dns.default_cache.clear()


def guarded(config: Optional[GuardConfig] = None) -> requests.Session:
    return requests_azguard.mount(requests.Session(), config or GuardConfig(breaker=False))


def readable(conn: Any) -> bool:
    """Something (EOF, RST) is pending on the pooled socket; nothing is consumed."""
    if conn.sock is None:
        return False
    r, _, _ = select.select([conn.azguard_raw], [], [], 0)
    return bool(r)


def get_ok(session: requests.Session, url: str, verify: Any = True) -> None:
    # verify per request: a Session's own verify loses to REQUESTS_CA_BUNDLE.
    resp = session.get(url + "/", timeout=5, verify=verify)
    assert resp.status_code == 200
    assert resp.content == b"ok"


def server_fin(srv: HTTPTestServer, index: int) -> None:
    # shutdown() sends the FIN now; close() alone waits for the server thread's
    # select() on the same socket to return.
    sock = srv.connections[index]
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def facts(**over: Any) -> ReuseFacts:
    """A healthy connection opened at T0, idle since T0 + 1, peer unchanged."""
    base: Dict[str, Any] = dict(
        opened_at=T0,
        idle_since=T0 + 1.0,
        readable=False,
        tcp=LIVE,
        peer_at_connect=PEER,
        peer_now=PEER,
        condemned_at=None,
        dns_addresses=frozenset({PEER[0]}),
    )
    base.update(over)
    return ReuseFacts(**base)


# -- the pure verdict -------------------------------------------------------------

NOW = T0 + 2.0  # 2 s after open, 1 s idle: inside every limit of CFG

CASES = {
    "peer_closed": (facts(readable=True), NOW),
    "max_idle": (facts(idle_since=T0 + 1.0), T0 + 1.0 + 60.5),
    "max_age": (facts(idle_since=T0 + 600.0), T0 + 600.5),
    "tcp_state": (facts(tcp=LIVE._replace(state=CLOSE_WAIT)), NOW),
    "keepalive_unanswered": (facts(tcp=LIVE._replace(probes=1)), NOW),
    "unacked": (facts(tcp=LIVE._replace(unacked=1)), NOW),
    "peer_changed": (facts(peer_now=("127.0.0.2", 8080)), NOW),
    "condemned": (facts(condemned_at=T0 + 1.5), NOW),
    "dns_drift": (facts(dns_addresses=frozenset({"127.0.0.2"})), NOW),
}


def test_every_reason_has_a_case() -> None:
    assert sorted(CASES) == sorted(REASONS)
    assert len(set(REASONS)) == len(REASONS)


@pytest.mark.parametrize("reason", REASONS)
def test_each_reason(reason: str) -> None:
    case, now = CASES[reason]
    assert reuse_verdict(case, now, CFG) == reason


def test_healthy_connection_is_reused() -> None:
    assert reuse_verdict(facts(), NOW, CFG) is None


def test_limits_are_strict_inequalities() -> None:
    # Exactly at the limit is still inside it.
    assert reuse_verdict(facts(idle_since=T0 + 1.0), T0 + 61.0, CFG) is None
    assert reuse_verdict(facts(idle_since=T0 + 599.0), T0 + 600.0, CFG) is None
    assert reuse_verdict(facts(idle_since=T0 + 1.0), T0 + 61.001, CFG) == "max_idle"


def test_getpeername_failing_counts_as_peer_changed() -> None:
    assert reuse_verdict(facts(peer_now=None), NOW, CFG) == "peer_changed"


def test_condemnation_covers_only_connections_opened_before_it() -> None:
    assert reuse_verdict(facts(condemned_at=T0), NOW, CFG) == "condemned"  # same instant
    assert reuse_verdict(facts(condemned_at=T0 - 0.001), NOW, CFG) is None


@pytest.mark.parametrize(
    "case, config, now",
    [
        pytest.param(facts(idle_since=T0), CFG.replace(max_idle=None), T0 + 500.0, id="max_idle"),
        pytest.param(
            facts(idle_since=T0 + 690.0), CFG.replace(max_age=None), T0 + 700.0, id="max_age"
        ),
        pytest.param(
            facts(idle_since=T0),
            CFG.replace(max_idle=None, max_age=None),
            T0 + 10_000.0,
            id="both_limits",
        ),
        # Facts that were not gathered say nothing: no DNS answer (rechecks
        # off), no TCP_INFO (off Linux or a shallow check), no peer recorded
        # at connect.
        pytest.param(facts(dns_addresses=None), CFG, NOW, id="dns_not_checked"),
        pytest.param(facts(tcp=None), CFG, NOW, id="no_tcp_info"),
        pytest.param(
            facts(peer_at_connect=None, peer_now=None, dns_addresses=frozenset({"127.0.0.2"})),
            CFG,
            NOW,
            id="no_peer_recorded",
        ),
        pytest.param(facts(idle_since=None), CFG, T0 + 100.0, id="never_idle"),
    ],
)
def test_checks_that_are_off_do_not_evict(
    case: ReuseFacts, config: GuardConfig, now: float
) -> None:
    assert reuse_verdict(case, now, config) is None


def test_precedence() -> None:
    """With every reason true at once, the verdict names them in this order;
    removing the winner each time exposes the next.  The socket's own word
    (pending EOF/RST, then the kernel's TCP state) comes before the guard's
    policies; DNS, the least certain, comes last."""
    order = [
        "peer_closed",
        "tcp_state",
        "keepalive_unanswered",
        "unacked",
        "peer_changed",
        "condemned",
        "max_age",
        "max_idle",
        "dns_drift",
    ]
    assert sorted(order) == sorted(REASONS)
    now = T0 + 700.0
    state: Dict[str, Any] = dict(
        readable=True,
        tcp=LIVE._replace(state=CLOSE_WAIT, probes=2, unacked=3),
        peer_now=None,
        condemned_at=T0 + 1.0,
        idle_since=T0 + 1.0,
        dns_addresses=frozenset({"127.0.0.2"}),
    )
    # How to take each reason away again, leaving the others in place.
    clear = {
        "peer_closed": {"readable": False},
        "tcp_state": {"tcp": LIVE._replace(probes=2, unacked=3)},
        "keepalive_unanswered": {"tcp": LIVE._replace(unacked=3)},
        "unacked": {"tcp": LIVE},
        "peer_changed": {"peer_now": PEER},
        "condemned": {"condemned_at": None},
        "max_age": {"opened_at": now - 1.0},
        "max_idle": {"idle_since": now - 1.0},
        "dns_drift": {"dns_addresses": frozenset({PEER[0]})},
    }
    seen = []
    for reason in order:
        verdict = reuse_verdict(facts(**state), now, CFG)
        seen.append(verdict)
        state.update(clear[reason])
    assert seen == order
    assert reuse_verdict(facts(**state), now, CFG) is None


# -- health grade (pure) ----------------------------------------------------------


@pytest.mark.parametrize(
    "vitals, expected",
    [
        (LIVE, HEALTHY),
        (LIVE._replace(rtt=0.050), HEALTHY),  # at the threshold: still healthy
        (LIVE._replace(rtt=0.051), DEGRADED),
        (LIVE._replace(retransmits=1), DEGRADED),
        (LIVE._replace(probes=1), DEGRADED),
        (LIVE._replace(rtt=0.200), DEGRADED),
        (LIVE._replace(rtt=0.201), UNHEALTHY),
        (LIVE._replace(retransmits=3), UNHEALTHY),
        (LIVE._replace(probes=3), UNHEALTHY),
        (LIVE._replace(state=CLOSE_WAIT), UNHEALTHY),
    ],
)
def test_grade_default_thresholds(vitals: TcpVitals, expected: str) -> None:
    cfg = GuardConfig(
        breaker=False,
        health_rtt_degraded=0.050,
        health_rtt_unhealthy=0.200,
        health_retrans_degraded=0,
        health_retrans_unhealthy=2,
    )
    assert grade(vitals, cfg) == expected


def test_grade_moves_with_the_config() -> None:
    slow = LIVE._replace(rtt=0.100, retransmits=1)
    assert grade(slow, GuardConfig(breaker=False)) == DEGRADED
    lenient = GuardConfig(
        breaker=False,
        health_rtt_degraded=0.150,
        health_rtt_unhealthy=0.300,
        health_retrans_degraded=1,
        health_retrans_unhealthy=4,
    )
    assert grade(slow, lenient) == HEALTHY
    strict = lenient.replace(health_rtt_degraded=0.010, health_rtt_unhealthy=0.050)
    assert grade(slow, strict) == UNHEALTHY


# -- FIN / RST on an idle pooled connection -----------------------------------------


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_peer_close_while_idle_is_caught_before_reuse(how: str, recorder: Recorder) -> None:
    session = guarded()
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        get_ok(session, srv.url)
        assert srv.accepted == 1
        conn = only_pooled(session, srv.url)
        if how == "fin":
            server_fin(srv, 0)
        else:
            rst_close(srv.connections[0])
        assert wait_until(lambda: readable(conn))
        get_ok(session, srv.url)
        assert srv.accepted == 2
        # The replacement (the same connection object, reconnected) is checked
        # on its own socket, not through state left by the dead one.
        get_ok(session, srv.url)
        get_ok(session, srv.url)
        assert srv.accepted == 2
        assert [r.conn_id for r in srv.requests] == [0, 0, 1, 1, 1]
    # Caught by validation, not by a failed request and a retry.
    assert recorder.values("connection_evicted", "reason") == ["peer_closed"]
    assert recorder.of("connection_evicted")[0][0] == f"http://127.0.0.1:{srv.port}"
    assert len(recorder.of("connection_reused")) == 3
    assert recorder.of("retry") == recorder.of("error") == []
    session.close()


def test_peer_close_over_tls_checks_the_socket_under_tls(
    tls_pair: Tuple[ssl.SSLContext, str], recorder: Recorder
) -> None:
    server_ctx, ca = tls_pair
    # ssl's wrap_socket detaches the accepted socket the server records, so a
    # duplicate of its descriptor, taken before the handshake, does the FIN.
    dups: List[socket.socket] = []

    def keep_dup(sock: socket.socket, conn_id: int) -> bool:
        dups.append(sock.dup())
        return True

    session = guarded()
    with HTTPTestServer(tls=server_ctx, on_accept=keep_dup) as srv:
        get_ok(session, srv.url, ca)
        get_ok(session, srv.url, ca)
        assert srv.accepted == 1
        assert recorder.values("connection_reused", "host") == [f"https://127.0.0.1:{srv.port}"]
        conn = only_pooled(session, srv.url)
        assert isinstance(conn.azguard_raw, socket.socket)
        if IS_LINUX:
            vitals = read_vitals(conn.azguard_raw)
            assert vitals is not None and vitals.state == ESTABLISHED
        dups[0].shutdown(socket.SHUT_RDWR)
        dups[0].close()
        assert wait_until(lambda: readable(conn))
        get_ok(session, srv.url, ca)
        assert srv.accepted == 2
    assert recorder.values("connection_evicted", "reason") == ["peer_closed"]
    assert recorder.of("retry") == recorder.of("error") == []
    session.close()


def test_connection_closed_on_purpose_is_not_an_eviction(recorder: Recorder) -> None:
    # "Connection: close" ends the connection by agreement; the next request
    # opens a new one without anything being judged dead.
    with HTTPTestServer(lambda req: Action(close=req.conn_id == 0)) as srv:
        session = guarded()
        get_ok(session, srv.url)
        get_ok(session, srv.url)
        get_ok(session, srv.url)
        assert srv.accepted == 2
    assert recorder.values("connection_evicted", "reason") == []
    assert len(recorder.of("connection_reused")) == 1
    session.close()


# -- max_idle / max_age -----------------------------------------------------------


@pytest.mark.parametrize(
    "reason, attr, shift",
    [("max_idle", "azguard_idle_since", 100.0), ("max_age", "azguard_opened_at", 1000.0)],
)
def test_aged_connection_is_replaced(
    reason: str, attr: str, shift: float, recorder: Recorder
) -> None:
    session = guarded(GuardConfig(breaker=False, max_idle=60.0, max_age=600.0))
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        get_ok(session, srv.url)  # young: reused
        assert srv.accepted == 1 and recorder.values("connection_evicted", "reason") == []
        conn = only_pooled(session, srv.url)
        setattr(conn, attr, getattr(conn, attr) - shift)
        get_ok(session, srv.url)
        assert srv.accepted == 2
        get_ok(session, srv.url)  # the replacement is young again
        assert srv.accepted == 2
    assert recorder.values("connection_evicted", "reason") == [reason]
    session.close()


@pytest.mark.parametrize(
    "attr, shift", [("azguard_idle_since", 100.0), ("azguard_opened_at", 1000.0)]
)
def test_limits_off_keep_old_connections(attr: str, shift: float, recorder: Recorder) -> None:
    session = guarded(GuardConfig(breaker=False, max_idle=None, max_age=None))
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        conn = only_pooled(session, srv.url)
        setattr(conn, attr, getattr(conn, attr) - shift)
        get_ok(session, srv.url)
        assert srv.accepted == 1
    assert recorder.values("connection_evicted", "reason") == []
    assert len(recorder.of("connection_reused")) == 1
    session.close()


# -- condemnation -----------------------------------------------------------------


def test_condemned_connection_is_replaced_and_the_younger_one_kept(recorder: Recorder) -> None:
    session = guarded()
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        conn = only_pooled(session, srv.url)
        assert conn.azguard_peer == ("127.0.0.1", srv.port)
        condemn(conn.azguard_peer, time.monotonic())
        get_ok(session, srv.url)
        assert srv.accepted == 2
        assert recorder.values("connection_evicted", "reason") == ["condemned"]
        # Opened after the verdict: it is not covered by it.
        fresh = only_pooled(session, srv.url)
        verdict_at = condemned_at(fresh.azguard_peer)
        assert verdict_at is not None and fresh.azguard_opened_at > verdict_at
        get_ok(session, srv.url)
        get_ok(session, srv.url)
        assert srv.accepted == 2
    assert recorder.values("connection_evicted", "reason") == ["condemned"]
    assert len(recorder.of("connection_reused")) == 2
    session.close()


def test_condemnation_from_another_thread(recorder: Recorder) -> None:
    session = guarded()
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        conn = only_pooled(session, srv.url)
        worker = threading.Thread(target=condemn, args=(conn.azguard_peer, time.monotonic()))
        worker.start()
        worker.join(5)
        assert not worker.is_alive()
        get_ok(session, srv.url)
        assert srv.accepted == 2
    assert recorder.values("connection_evicted", "reason") == ["condemned"]
    session.close()


def test_condemning_another_peer_leaves_this_one_alone(recorder: Recorder) -> None:
    session = guarded()
    with HTTPTestServer() as srv, HTTPTestServer() as other:
        get_ok(session, srv.url)
        get_ok(session, other.url)
        condemn(("127.0.0.1", other.port), time.monotonic())
        get_ok(session, srv.url)
        assert srv.accepted == 1
        get_ok(session, other.url)
        assert other.accepted == 2
    assert recorder.values("connection_evicted", "reason") == ["condemned"]
    assert recorder.of("connection_evicted")[0][0] == f"http://127.0.0.1:{other.port}"
    session.close()


# -- DNS drift --------------------------------------------------------------------


class FakeResolver:
    """Answers every lookup with ``address`` and counts the lookups."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.calls: List[Tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> List[Tuple[Any, ...]]:
        self.calls.append((host, port))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.address, port))]


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeResolver]:
    fake = FakeResolver("127.0.0.1")
    monkeypatch.setattr(_dns.default_cache, "_resolver", fake)
    yield fake


def test_dns_drift_evicts(resolver: FakeResolver, recorder: Recorder) -> None:
    # The "moved" answer is another loopback address; nothing ever connects to it.
    resolver.address = "127.0.0.2"
    session = guarded(GuardConfig(breaker=False, dns_recheck=30.0))
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        assert resolver.calls == []  # a new connection is not validated
        get_ok(session, srv.url)
        assert srv.accepted == 2
    assert recorder.values("connection_evicted", "reason") == ["dns_drift"]
    assert resolver.calls == [("127.0.0.1", srv.port)]
    session.close()


def test_dns_unchanged_reuses_and_resolves_once_per_interval(
    resolver: FakeResolver, recorder: Recorder
) -> None:
    session = guarded(GuardConfig(breaker=False, dns_recheck=30.0))
    with HTTPTestServer() as srv:
        for _ in range(5):
            get_ok(session, srv.url)
        assert srv.accepted == 1
        assert len(resolver.calls) == 1
        # Past the interval (the cached answer is made old, not waited for):
        # one more lookup, and it still matches.
        key = ("127.0.0.1", srv.port)
        when, answer = _dns.default_cache._answers[key]
        _dns.default_cache._answers[key] = (when - 31.0, answer)
        get_ok(session, srv.url)
        get_ok(session, srv.url)
        assert len(resolver.calls) == 2
        assert srv.accepted == 1
    assert recorder.values("connection_evicted", "reason") == []
    assert len(recorder.of("connection_reused")) == 6
    session.close()


def test_dns_checked_by_name_for_localhost(resolver: FakeResolver, recorder: Recorder) -> None:
    session = guarded(GuardConfig(breaker=False, dns_recheck=30.0))
    with HTTPTestServer() as srv:
        url = f"http://localhost:{srv.port}"
        get_ok(session, url)
        get_ok(session, url)
        resolver.address = "127.0.0.2"
        _dns.default_cache.clear()
        get_ok(session, url)
        assert srv.accepted == 2
    assert [host for host, _ in resolver.calls] == ["localhost", "localhost"]
    assert recorder.values("connection_evicted", "reason") == ["dns_drift"]
    session.close()


def test_dns_failure_keeps_the_connection(
    monkeypatch: pytest.MonkeyPatch, recorder: Recorder
) -> None:
    def failing(host: str, port: int) -> List[Tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "no such name")

    monkeypatch.setattr(_dns.default_cache, "_resolver", failing)
    session = guarded(GuardConfig(breaker=False, dns_recheck=30.0))
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        get_ok(session, srv.url)
        assert srv.accepted == 1
    assert recorder.values("connection_evicted", "reason") == []
    session.close()


def test_dns_recheck_off_never_resolves(resolver: FakeResolver, recorder: Recorder) -> None:
    resolver.address = "127.0.0.2"
    session = guarded(GuardConfig(breaker=False, dns_recheck=None))
    with HTTPTestServer() as srv:
        for _ in range(3):
            get_ok(session, srv.url)
        assert srv.accepted == 1
    assert resolver.calls == []
    assert recorder.values("connection_evicted", "reason") == []
    session.close()


# -- deep check gating ------------------------------------------------------------


class Clock:
    """The monotonic clock ``_connection`` reads, moved by hand."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_connection, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


@pytest.fixture
def vitals_calls(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    calls: List[Any] = []
    real = _validation.read_vitals

    def counting(raw: Any) -> Optional[TcpVitals]:
        calls.append(raw)
        return real(raw)

    monkeypatch.setattr(_validation, "read_vitals", counting)
    return calls


@linux_only
def test_recently_idle_connection_skips_the_kernel_queries(
    clock: Clock, vitals_calls: List[Any], recorder: Recorder
) -> None:
    session = guarded()
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        for _ in range(3):
            # Frozen clock: back from the pool after 0 s, then just under the gate.
            get_ok(session, srv.url)
        clock.now += DEEP_CHECK_AFTER * 0.9
        get_ok(session, srv.url)
        assert vitals_calls == []
        assert srv.accepted == 1
        conn = only_pooled(session, srv.url)
        clock.now += DEEP_CHECK_AFTER + 0.1
        get_ok(session, srv.url)
        assert vitals_calls == [conn.azguard_raw]
        assert srv.accepted == 1
    assert recorder.values("connection_evicted", "reason") == []
    # Once at connect, once for the deep check: the shallow checks report nothing.
    assert [g for _, _, g in recorder.of("tcp_info")] == [HEALTHY, HEALTHY]
    session.close()


@linux_only
def test_deep_check_after_moving_idle_since_back(
    vitals_calls: List[Any], recorder: Recorder
) -> None:
    session = guarded()
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        conn = only_pooled(session, srv.url)
        conn.azguard_idle_since -= 1.0
        get_ok(session, srv.url)
        assert vitals_calls == [conn.azguard_raw]
        assert srv.accepted == 1
    assert recorder.values("connection_evicted", "reason") == []
    session.close()


# -- TCP_INFO on live pooled connections ----------------------------------------------


@linux_only
def test_live_vitals_and_verdict_after_fin() -> None:
    session = guarded()
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        conn = only_pooled(session, srv.url)
        vitals = read_vitals(conn.azguard_raw)
        assert vitals is not None
        assert vitals.state == ESTABLISHED
        assert vitals.unacked == 0 and vitals.probes == 0
        now = conn.azguard_idle_since + 1.0  # past the gate: the deep facts
        healthy = gather(conn, now, CFG)
        assert healthy.tcp is not None and healthy.tcp.state == ESTABLISHED
        assert healthy.peer_now == healthy.peer_at_connect == ("127.0.0.1", srv.port)
        assert reuse_verdict(healthy, now, CFG) is None

        server_fin(srv, 0)
        assert wait_until(lambda: _state(conn) == CLOSE_WAIT)
        closed = gather(conn, now, CFG)
        assert closed.readable
        assert closed.tcp is not None and closed.tcp.state == CLOSE_WAIT
        assert reuse_verdict(closed, now, CFG) == "peer_closed"
        # Without the poll (urllib3 1.26 polls itself) the kernel state decides.
        unpolled = gather(conn, now, CFG, poll=False)
        assert not unpolled.readable
        assert reuse_verdict(unpolled, now, CFG) == "tcp_state"
    session.close()


@linux_only
def test_getpeername_failing_after_rst_on_a_live_socket() -> None:
    session = guarded()
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        conn = only_pooled(session, srv.url)
        rst_close(srv.connections[0])
        assert wait_until(lambda: readable(conn))
        now = conn.azguard_idle_since + 1.0
        found = gather(conn, now, CFG, poll=False)
        # A reset socket has no peer any more: getpeername() raises ENOTCONN.
        assert found.peer_now is None
        assert found.peer_at_connect == ("127.0.0.1", srv.port)
        assert found.tcp is not None and found.tcp.state != ESTABLISHED
        assert reuse_verdict(found._replace(tcp=None), now, CFG) == "peer_changed"
    session.close()


def _state(conn: Any) -> Optional[int]:
    vitals = read_vitals(conn.azguard_raw)
    return vitals.state if vitals is not None else None


@linux_only
def test_tcp_info_reports_healthy_on_loopback(recorder: Recorder) -> None:
    session = guarded()
    with HTTPTestServer() as srv:
        get_ok(session, srv.url)
        conn = only_pooled(session, srv.url)
        conn.azguard_idle_since -= 1.0  # past the gate: a deep check reports again
        get_ok(session, srv.url)
    host = f"http://127.0.0.1:{srv.port}"
    assert [(h, g) for h, _, g in recorder.of("tcp_info")] == [(host, HEALTHY), (host, HEALTHY)]
    assert all(rtt > 0 for _, rtt, _ in recorder.of("tcp_info"))
    session.close()


# -- the quiet window: the reuse shortcut agrees with the verdict ------------------------

# Times on a grid of 1/64 s, exact in binary floating point, so that the
# shortcut's sums and the verdict's differences round alike.
_grid = st.integers(0, 64 * 30).map(lambda n: n / 64)
_limit = st.none() | st.integers(1, 64 * 30).map(lambda n: n / 64)
# How long the connection has been back in the pool: mostly inside the
# quiet window (DEEP_CHECK_AFTER), where the shortcut applies.
_waited = st.integers(0, 32).map(lambda n: n / 64)


def _idle_connection(config: GuardConfig, sock: socket.socket) -> Any:
    conn = _connection.GuardedConnection()
    conn.sock = sock
    conn.azguard_bind(config, "http://x:80", ("x", 80), False)
    conn.azguard_raw = sock
    conn.azguard_peer = PEER
    return conn


@settings(max_examples=400, deadline=None, database=None)
@given(
    opened=_grid,
    idle_after=_grid,
    waited=_waited,
    max_age=_limit,
    max_idle=_limit,
    dns=st.booleans(),
    condemned=st.none() | _grid,
)
def test_the_reuse_shortcut_agrees_with_the_full_check(
    opened: float,
    idle_after: float,
    waited: float,
    max_age: Optional[float],
    max_idle: Optional[float],
    dns: bool,
    condemned: Optional[float],
) -> None:
    config = GuardConfig(
        breaker=False, max_age=max_age, max_idle=max_idle, dns_recheck=1.0 if dns else None
    )
    a, b = socket.socketpair()
    try:
        conn = _idle_connection(config, a)
        conn.azguard_opened_at = T0 + opened
        conn.azguard_idle_since = T0 + opened + idle_after
        now = conn.azguard_idle_since + waited
        reset_condemnations()
        if condemned is not None:
            condemn(PEER, T0 + condemned)
        if conn._azguard_settled(now):
            # Nothing to read on the socket: the full check must reuse it too.
            facts = gather(conn, now, config, poll=True, dns_target=conn.azguard_dns_target)
            assert reuse_verdict(facts, now, config) is None, facts
    finally:
        a.close()
        b.close()
        reset_condemnations()


def test_the_reuse_shortcut_covers_a_busy_pool_and_nothing_else() -> None:
    a, b = socket.socketpair()
    try:
        conn = _idle_connection(CFG, a)
        conn.azguard_opened_at = T0
        conn.azguard_idle_since = T0 + 5.0
        assert conn._azguard_settled(T0 + 5.0 + DEEP_CHECK_AFTER / 2)  # just put back
        assert not conn._azguard_settled(T0 + 5.0 + DEEP_CHECK_AFTER)  # the kernel is asked
        condemn(PEER, T0 + 1.0)
        assert not conn._azguard_settled(T0 + 5.0 + DEEP_CHECK_AFTER / 2)  # condemned since
        reset_condemnations()
        conn.azguard_opened_at = T0 + 5.0 - CFG.max_age - 0.5  # type: ignore[operator]
        assert not conn._azguard_settled(T0 + 5.0 + 0.01)  # too old
        dns_conn = _idle_connection(CFG.replace(dns_recheck=30.0), a)
        dns_conn.azguard_opened_at, dns_conn.azguard_idle_since = T0, T0 + 5.0
        assert not dns_conn._azguard_settled(T0 + 5.0)  # DNS may drift at any time
    finally:
        a.close()
        b.close()
