"""Whom a failure blames: the host, its proxy, or nobody (a dead flow).

The first principle: turning the guard on never makes a program fail more
than plain requests.  A breaker that blamed a host for a dead flow, a dead
proxy or one slow endpoint broke it; these tests pin the evidence rules
(``_failure.judge``) end to end with real local servers, and the exception
classes of body failures against plain requests in the same run.
"""

from __future__ import annotations

import gzip
import socket
from typing import Any, List, Tuple

import pytest
import requests
import urllib3
from conftest import Clock
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from servers import Action, HTTPTestServer, Request

import requests_azguard
from requests_azguard import CircuitOpenError, GuardConfig, ProxyCircuitOpenError
from requests_azguard._breaker import CLOSED, OPEN, BreakerSettings
from requests_azguard._breaker_registry import registry
from requests_azguard._failure import failure_of
from requests_azguard._instrument import add_instrumentation
from requests_azguard._prometheus import PrometheusInstrumentation


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def states() -> dict[str, str]:
    return {b.key: b.state for b in registry().breakers()}


def test_a_refused_proxy_trips_its_own_breaker_never_the_targets(clock: Clock) -> None:
    prom = CollectorRegistry()
    add_instrumentation(PrometheusInstrumentation(prom))
    proxy = f"http://127.0.0.1:{closed_port()}"
    with HTTPTestServer() as target:
        s = requests_azguard.mount(requests.Session())  # the default config: breaker on
        errors: List[BaseException] = []
        for _ in range(8):
            with pytest.raises(requests.exceptions.ProxyError) as info:
                s.get(target.url, proxies={"http": proxy}, timeout=5)
            errors.append(info.value)
        # fail_max (5) refusals, then the proxy's breaker answers for it:
        # both a CircuitOpenError and the ProxyError plain requests raises.
        assert not any(isinstance(e, CircuitOpenError) for e in errors[:5])
        assert all(isinstance(e, ProxyCircuitOpenError) for e in errors[5:]), errors
        assert errors[-1].host == proxy  # type: ignore[attr-defined]
        assert states() == {proxy: OPEN, target.url: CLOSED}
        # Direct requests to the target, from any Session, are untouched.
        for _ in range(2):
            assert requests_azguard.mount(requests.Session()).get(target.url, timeout=5).ok
    gauges = {
        s.labels["host"]: s.value
        for family in text_string_to_metric_families(generate_latest(prom).decode())
        for s in family.samples
        if s.name == "azguard_breaker_state"
    }
    assert gauges[proxy] == 2.0  # open, under the proxy's own host label
    assert gauges.get(target.url, 0.0) == 0.0


def test_a_slow_endpoint_does_not_black_out_its_host(clock: Clock) -> None:
    def behaviour(req: Request) -> Action:
        return Action(kind="silence") if req.target == "/slow" else Action.ok(b"fast")

    with HTTPTestServer(behaviour) as srv:
        s = requests_azguard.mount(requests.Session())  # default: fail_max 5, fail-fast 2
        for _ in range(3):
            with pytest.raises(requests.ReadTimeout) as info:
                s.get(srv.url + "/slow", timeout=(2, 0.2))
            failure = failure_of(info.value)
            # The server's TCP answered the probe: one ordinary host failure.
            assert failure is not None and failure.blame == "host", failure
        for _ in range(2):
            r = s.get(srv.url + "/fast", timeout=5)
            assert (r.status_code, r.text) == (200, "fast")
        assert states() == {srv.url: CLOSED}


# --- failures while the body is read: the exception plain requests raises ----

_CHUNKED_BROKEN = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"
_SHORT_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a few bytes"

BODY_FAULTS = {
    "broken_chunked": Action(raw=_CHUNKED_BROKEN),
    "short_content_length": Action(raw=_SHORT_LENGTH),
    "mid_body_stall": Action(body=b"x" * 1000, partial=100, stall=30.0),
    "bad_gzip": Action(body=b"this is not gzip", headers={"Content-Encoding": "gzip"}),
}


# urllib3 1.26 (and so plain requests on it) accepts a body short of its
# Content-Length; 2.x raises.
SHORT_BODY_RAISES = not urllib3.__version__.startswith("1.")


def _outcome(session: requests.Session, url: str) -> object:
    """The exception class raised, or the body returned."""
    try:
        return session.get(url, timeout=(2, 0.3)).content
    except requests.RequestException as exc:
        return type(exc)


@pytest.mark.parametrize("fault", sorted(BODY_FAULTS))
def test_body_failures_raise_what_plain_requests_raises(clock: Clock, fault: str) -> None:
    with HTTPTestServer(lambda r: BODY_FAULTS[fault]) as srv:
        plain = _outcome(requests.Session(), srv.url)
        guarded = _outcome(requests_azguard.mount(requests.Session()), srv.url)
    assert guarded == plain, (fault, plain, guarded)
    if fault != "short_content_length" or SHORT_BODY_RAISES:
        assert isinstance(plain, type) and issubclass(plain, requests.RequestException), plain
    # The body failure says nothing to make the host's breaker open.
    assert registry().breakers()[0].state == CLOSED


@pytest.mark.parametrize(
    "fault",
    [
        "broken_chunked",
        pytest.param(
            "short_content_length",
            marks=pytest.mark.skipif(
                not SHORT_BODY_RAISES, reason="urllib3 1.26 accepts a short body, as requests does"
            ),
        ),
    ],
)
def test_a_replayable_get_whose_body_broke_once_is_replayed(clock: Clock, fault: str) -> None:
    payload = gzip.compress(b"whole")
    seen: List[Tuple[int, int]] = []

    def behaviour(req: Request) -> Action:
        seen.append((req.conn_id, req.conn_seq))
        if len(seen) == 1:
            return BODY_FAULTS[fault]
        return Action.ok(payload, headers={"Content-Encoding": "gzip"})

    with HTTPTestServer(behaviour) as srv:
        r = requests_azguard.mount(requests.Session()).get(srv.url, timeout=5)
        assert (r.status_code, r.content) == (200, b"whole")
        assert len(seen) == 2 and seen[1][0] != seen[0][0]  # replayed on a fresh connection
        # Plain requests fails on the same first answer.
        seen.clear()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.Session().get(srv.url, timeout=5)


def test_a_post_whose_body_broke_is_not_replayed(clock: Clock) -> None:
    seen: List[Any] = []

    def behaviour(req: Request) -> Action:
        seen.append(req)
        return Action(raw=_CHUNKED_BROKEN)

    with HTTPTestServer(behaviour) as srv:
        s = requests_azguard.mount(requests.Session())
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            s.post(srv.url, data=b"once", timeout=5)
    assert len(seen) == 1


def test_fallback_accepts_only_error_statuses() -> None:
    with pytest.raises(requests_azguard.ConfigError, match="400 to 599"):
        GuardConfig.from_env(environ={"AZGUARD_FALLBACK": "200"})
    with pytest.raises(requests_azguard.ConfigError, match="400 to 599"):
        GuardConfig(fallback_status=302)
    assert GuardConfig.from_env(environ={"AZGUARD_FALLBACK": "503"}).fallback_status == 503


@pytest.mark.parametrize("raw", ["0", "off"])
def test_timeout_fail_fast_can_be_switched_off(raw: str) -> None:
    assert GuardConfig.from_env(environ={"AZGUARD_TIMEOUT_FAIL_FAST": raw}).timeout_fail_fast == 0


def test_connect_timeouts_open_at_once_only_while_the_rule_is_on(clock: Clock) -> None:
    from requests_azguard._breaker import BreakerSettings, HostBreaker

    def breaker(fail_fast: int) -> HostBreaker:
        return HostBreaker(
            "http://h:1",
            BreakerSettings(50, 30.0, fail_fast, None),
            half_open_trials=1,
            sync_interval=0.5,
        )

    on, off = breaker(2), breaker(0)
    for b in (on, off):
        for _ in range(2):
            b.record_failure(b.admit(0.0), 0.0, timeout=True)
    assert (on.state, off.state) == (OPEN, CLOSED)


def test_a_success_on_a_fresh_connection_closes_an_open_breaker(clock: Clock) -> None:
    with HTTPTestServer() as srv:
        cfg = GuardConfig(retries=0)
        s = requests_azguard.mount(requests.Session(), cfg)
        assert s.get(srv.url, timeout=5).ok
        b = registry().get(BreakerSettings.of(cfg), srv.url)
        early = b.admit(clock())  # a request admitted before the trip
        for _ in range(cfg.breaker_fail_max):
            b.record_failure(b.admit(clock()), clock())
        assert b.state == OPEN
        # It ends well on a pooled connection: that proves nothing new.
        b.record_success(early, clock(), fresh=False)
        assert b.state == OPEN
        # A success on a fresh connection proves the host reachable now.
        b.record_success(0, clock(), fresh=True)
        assert b.state == CLOSED
        assert s.get(srv.url, timeout=5).ok


def test_responses_say_whether_their_connection_was_fresh(clock: Clock) -> None:
    from requests_azguard._breaker_gate import fresh_connection

    with HTTPTestServer() as srv:
        s = requests_azguard.mount(requests.Session(), GuardConfig(retries=0))
        first, second = s.get(srv.url, timeout=5), s.get(srv.url, timeout=5)
    assert (fresh_connection(first.raw), fresh_connection(second.raw)) == (True, False)


def test_a_body_that_broke_and_a_replay_that_failed_raise_what_plain_raises(clock: Clock) -> None:
    # requests' own test_chunked_encoding_error: a server that serves one
    # broken chunked response and is gone.  The guard replays the GET, the
    # replay is refused, and the caller still sees the broken body.
    def serve_once(srv: HTTPTestServer) -> Any:
        def behaviour(req: Request) -> Action:
            srv.listener.close()  # no second connection will be accepted
            return Action(raw=_CHUNKED_BROKEN)

        return behaviour

    outcomes = []
    for session in (requests.Session(), requests_azguard.mount(requests.Session())):
        srv = HTTPTestServer()
        srv.behaviour = serve_once(srv)
        with srv, pytest.raises(requests.RequestException) as info:
            session.get(srv.url, timeout=5)
        outcomes.append(type(info.value))
    assert outcomes == [requests.exceptions.ChunkedEncodingError] * 2
