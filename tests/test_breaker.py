"""Per-host circuit breakers: state machine, gate around send(), fallbacks, registry.

Real sockets throughout: refused ports are bound-but-not-listening sockets,
black-holed hosts are listening sockets that never accept (the kernel completes
the handshake into the backlog and nobody ever reads, so the client's read
timeout fires), and "no socket touched" is proven with an audit hook that
sees every socket created or connected in this process.  Time is an injected
clock; nothing sleeps to let a breaker reset.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest
import requests
from conftest import Clock
from servers import Action, HTTPTestServer, ProxyServer, Request

from requests_azguard import AzGuardAdapter, CircuitOpenError, ConfigError, GuardConfig, mount
from requests_azguard._breaker import CLOSED, HALF_OPEN, OPEN, BreakerSettings, HostBreaker
from requests_azguard._breaker_registry import breaker_key, registry, reset_breakers
from requests_azguard._failure import failure_of
from requests_azguard._fallback import FALLBACK_HEADER
from requests_azguard._instrument import NoopInstrumentation, add_instrumentation
from requests_azguard._policy import classify


class Recorder(NoopInstrumentation):
    def __init__(self) -> None:
        self.transitions: List[Tuple[str, str, str]] = []
        self.fallbacks: List[str] = []

    def breaker_transition(self, host: str, old: str, new: str) -> None:
        self.transitions.append((host, old, new))

    def fallback_served(self, host: str) -> None:
        self.fallbacks.append(host)


# -- socket audit ---------------------------------------------------------------
# Audit hooks cannot be removed, so one hook is installed once and feeds
# whichever lists are currently listening.
_audit_sinks: List[List[Tuple[str, Any]]] = []
_audit_installed = False


def _audit(event: str, args: Tuple[Any, ...]) -> None:
    if _audit_sinks and event in ("socket.__new__", "socket.connect"):
        for sink in _audit_sinks:
            sink.append((event, args[1] if event == "socket.connect" else None))


class socket_audit:
    """Collects every socket created or connected while active (any thread)."""

    def __enter__(self) -> List[Tuple[str, Any]]:
        global _audit_installed
        if not _audit_installed:
            sys.addaudithook(_audit)
            _audit_installed = True
        self.events: List[Tuple[str, Any]] = []
        _audit_sinks.append(self.events)
        return self.events

    def __exit__(self, *exc: object) -> None:
        _audit_sinks.remove(self.events)


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture
def recorder() -> Recorder:
    rec = Recorder()
    add_instrumentation(rec)
    return rec


@pytest.fixture
def refused() -> Iterator[Tuple[socket.socket, str]]:
    """A port that refuses connections (bound, not listening), and its URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    yield sock, f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A port whose connections are never accepted nor answered."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def session(config: Optional[GuardConfig] = None, **kwargs: Any) -> requests.Session:
    cfg = config or GuardConfig(retries=0, breaker_fail_max=3, breaker_reset_timeout=30.0)
    return mount(requests.Session(), cfg, **kwargs)


# What a caller sees when a request reaches a dead host: requests' errors only.
HOST_FAILURES = requests.RequestException


def fail(s: requests.Session, url: str, times: int, **kw: Any) -> List[BaseException]:
    timeout = kw.pop("timeout", 2)
    errors = []
    for _ in range(times):
        with pytest.raises(HOST_FAILURES) as info:
            s.get(url, timeout=timeout, **kw)
        assert not isinstance(info.value, CircuitOpenError)
        errors.append(info.value)
    return errors


def serve_once_on(sock: socket.socket, accepted: List[int]) -> threading.Thread:
    """Start listening on a bound socket and answer HTTP 200 on each connection."""
    sock.listen(8)
    sock.settimeout(5)

    def run() -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        accepted.append(1)
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# -- keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://Example.COM/a/b?q=1", "http://example.com:80"),
        ("https://example.com/", "https://example.com:443"),
        ("http://user:pw@127.0.0.1:8080/x", "http://127.0.0.1:8080"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
        ("HTTPS://h:8443?x=1", "https://h:8443"),
    ],
)
def test_default_key_is_scheme_host_port(url: str, key: str) -> None:
    req = requests.Request("GET", url).prepare()
    assert breaker_key(req) == key


def test_settings_repr_hides_redis_password() -> None:
    settings = BreakerSettings.of(GuardConfig(redis_url="redis://:hunter2@127.0.0.1:6379/0"))
    assert "hunter2" not in repr(settings)
    assert "***" in repr(settings)


# -- state machine (HostBreaker, injected time) ---------------------------------------------


def make_breaker(fail_max: int = 3, timeouts: int = 2, trials: int = 1) -> HostBreaker:
    return HostBreaker(
        "http://h:80",
        BreakerSettings(fail_max, 10.0, timeouts, None),
        half_open_trials=trials,
        sync_interval=0.5,
    )


def test_opens_after_fail_max_consecutive_failures_and_success_resets(
    recorder: Recorder,
) -> None:
    b = make_breaker()
    for _ in range(2):
        b.record_failure(b.admit(0.0), 0.0)
    b.record_success(b.admit(0.0), 0.0)  # resets the count
    for _ in range(2):
        b.record_failure(b.admit(1.0), 1.0)
    assert b.state == CLOSED
    b.record_failure(b.admit(1.0), 1.0)
    assert b.state == OPEN
    assert recorder.transitions == [("http://h:80", CLOSED, OPEN)]
    with pytest.raises(CircuitOpenError) as info:
        b.admit(5.0)
    assert info.value.host == "http://h:80"
    assert info.value.retry_at == 11.0
    assert isinstance(info.value, requests.ConnectionError)


def test_consecutive_timeouts_open_at_once_and_streak_breaks() -> None:
    b = make_breaker(fail_max=10, timeouts=2)
    b.record_failure(b.admit(0.0), 0.0, timeout=True)
    b.record_success(b.admit(0.0), 0.0)
    b.record_failure(b.admit(0.0), 0.0, timeout=True)
    b.record_failure(b.admit(0.0), 0.0, timeout=False)  # not a timeout: streak broken
    b.record_failure(b.admit(0.0), 0.0, timeout=True)
    assert b.state == CLOSED
    b.record_failure(b.admit(0.0), 0.0, timeout=True)
    assert b.state == OPEN


def test_half_open_admits_bounded_trials_and_others_fail_fast(recorder: Recorder) -> None:
    b = make_breaker(fail_max=1, trials=2)
    b.record_failure(b.admit(0.0), 0.0)
    t1 = b.admit(10.0)
    t2 = b.admit(10.0)
    assert t1 and t2 and b.state == HALF_OPEN
    with pytest.raises(CircuitOpenError):
        b.admit(10.0)
    b.record_failure(t1, 10.5)  # one trial failed: open again, for a new period
    assert b.state == OPEN
    b.record_success(t2, 10.6)  # the other trial's late success changes nothing
    assert b.state == OPEN
    with pytest.raises(CircuitOpenError) as info:
        b.admit(20.0)
    assert info.value.retry_at == 20.5
    t3 = b.admit(20.5)
    b.record_success(t3, 20.6)
    assert b.state == CLOSED
    assert [t[1:] for t in recorder.transitions] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]


def test_neutral_trial_frees_the_slot_and_a_stuck_trial_lease_expires() -> None:
    b = make_breaker(fail_max=1)
    b.record_failure(b.admit(0.0), 0.0)
    t = b.admit(10.0)
    b.record_neutral(t, 10.0)
    t = b.admit(10.0)  # freed: another trial may go
    with pytest.raises(CircuitOpenError):
        b.admit(15.0)
    t_late = t
    t = b.admit(20.0)  # lease (reset_timeout) ran out: a new trial
    assert t != t_late
    b.record_success(t_late, 21.0)  # the expired trial's verdict is ignored
    assert b.state == HALF_OPEN
    b.record_success(t, 21.0)
    assert b.state == CLOSED


def test_backward_clock_jump_keeps_breaker_open_at_most_one_period() -> None:
    b = make_breaker(fail_max=1)
    b.record_failure(b.admit(1000.0), 1000.0)
    with pytest.raises(CircuitOpenError) as info:
        b.admit(500.0)  # clock went back 500 s
    assert info.value.retry_at == 510.0
    # A far-future opened_at (another machine's clock) is capped at now + reset_timeout.
    b._adopt(_snap(OPEN, 9999.0), b._epoch, 500.0)
    assert b.retry_at == 510.0


def _snap(state: str, opened_at: float) -> Any:
    from requests_azguard._breaker_redis import Snapshot

    return Snapshot(state, opened_at, 0, 0.0)


# -- the gate in send(): dead hosts ------------------------------------------------------------


def test_refused_host_fails_fast_without_sockets_then_one_trial_closes(
    clock: Clock, recorder: Recorder, refused: Tuple[socket.socket, str]
) -> None:
    sock, url = refused
    s = session()
    errors = fail(s, url, 3)
    assert not any(isinstance(e, CircuitOpenError) for e in errors)
    latencies = []
    with socket_audit() as events:
        for _ in range(1000):
            t0 = time.perf_counter()
            with pytest.raises(CircuitOpenError) as info:
                s.get(url + "/x", timeout=2)
            latencies.append(time.perf_counter() - t0)
    assert events == []  # not one socket created or connected
    assert info.value.retry_at == clock.now + 30.0
    assert info.value.request is not None and info.value.request.url == url + "/x"
    latencies.sort()
    # Reported, not asserted: timing belongs in benchmarks/bench_breaker.py.
    print(f"open-breaker p99 through Session.get: {latencies[989] * 1e6:.0f} us")

    accepted: List[int] = []
    thread = serve_once_on(sock, accepted)  # the host comes back
    clock.advance(29.9)
    with pytest.raises(CircuitOpenError):
        s.get(url, timeout=2)
    assert accepted == []
    clock.advance(0.1)
    assert s.get(url, timeout=5).text == "ok"
    thread.join(5)
    assert accepted == [1]
    assert [t[1:] for t in recorder.transitions] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]
    assert registry().breakers()[0].state == CLOSED


def test_wedged_host_trips_after_fail_max_read_timeouts(clock: Clock, blackhole: str) -> None:
    # The kernel accepts and acknowledges (the listener never accepts), the
    # application never answers: the flow's TCP is alive, so each read
    # timeout blames the host, as one ordinary failure.  The connect-timeout
    # rule (timeout_fail_fast=1) must not fire on read timeouts.
    cfg = GuardConfig(retries=0, breaker_fail_max=3, timeout_fail_fast=1)
    s = session(cfg)
    errors = fail(s, blackhole, 3, timeout=(1.0, 0.05))
    assert all(isinstance(e, requests.ReadTimeout) for e in errors), errors
    assert all(failure_of(e) is not None and failure_of(e).blame == "host" for e in errors)  # type: ignore[union-attr]
    assert not any(classify(e).decision.timeout for e in errors)
    with socket_audit() as events:
        for _ in range(1000):
            with pytest.raises(CircuitOpenError):
                s.get(blackhole, timeout=(1.0, 0.05))
    assert events == []
    # The trial after reset_timeout goes out, times out, and re-opens.
    clock.advance(cfg.breaker_reset_timeout)
    with socket_audit() as events:
        fail(s, blackhole, 1, timeout=(1.0, 0.05))
        with pytest.raises(CircuitOpenError):
            s.get(blackhole, timeout=(1.0, 0.05))
    assert [e for e, _ in events].count("socket.connect") == 1


def test_read_timeouts_never_open_at_once(clock: Clock, blackhole: str) -> None:
    # Two read timeouts with timeout_fail_fast=2 used to open the breaker:
    # a slow endpoint then blacked out its whole host.
    cfg = GuardConfig(retries=0, breaker_fail_max=50, timeout_fail_fast=2)
    s = session(cfg)
    fail(s, blackhole, 4, timeout=(1.0, 0.05))
    assert registry().breakers()[0].state == CLOSED


def test_half_open_lets_one_trial_through_while_others_fail_fast(
    clock: Clock, refused: Tuple[socket.socket, str]
) -> None:
    _, dead_url = refused
    release = threading.Event()
    seen: List[Request] = []

    def slow(req: Request) -> Action:
        seen.append(req)
        release.wait(10)
        return Action()

    with HTTPTestServer(slow) as srv:
        s = session(pool_maxsize=4)
        # One key for both hosts: trip it on the dead one, try it on the live one.
        s.adapters["http://"].azguard_breaker_key = lambda r: "svc"
        fail(s, dead_url, 3)
        clock.advance(30.0)
        result: List[Any] = []
        trial = threading.Thread(target=lambda: result.append(s.get(srv.url, timeout=10)))
        trial.start()
        try:
            assert _wait(lambda: len(seen) == 1)
            with pytest.raises(CircuitOpenError):
                s.get(srv.url, timeout=10)
        finally:
            release.set()
            trial.join(10)
        assert result[0].status_code == 200
        assert s.get(srv.url, timeout=10).status_code == 200
        assert len(seen) == 2


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    from servers import wait_until

    return wait_until(predicate, timeout)


# -- what counts -------------------------------------------------------------------------------


def test_breaker_statuses_count_and_4xx_counts_as_success(clock: Clock) -> None:
    status = {"code": 503}
    with HTTPTestServer(lambda r: Action(status=status["code"])) as srv:
        s = session()
        for _ in range(2):
            assert s.get(srv.url, timeout=5).status_code == 503
        status["code"] = 404
        assert s.get(srv.url, timeout=5).status_code == 404  # resets the count
        status["code"] = 502
        for _ in range(2):
            assert s.get(srv.url, timeout=5).status_code == 502
        assert registry().breakers()[0].state == CLOSED
        assert s.get(srv.url, timeout=5).status_code == 502
        before = len(srv.requests)
        with pytest.raises(CircuitOpenError):
            s.get(srv.url, timeout=5)
        assert len(srv.requests) == before


def test_breaker_statuses_from_environment(clock: Clock) -> None:
    cfg = GuardConfig.from_env(
        {"AZGUARD_BREAKER_STATUSES": "429", "AZGUARD_BREAKER_FAIL_MAX": "2", "AZGUARD_RETRIES": "0"}
    )
    with HTTPTestServer(lambda r: Action(status=503 if r.target == "/a" else 429)) as srv:
        s = session(cfg)
        for _ in range(4):
            assert s.get(srv.url + "/a", timeout=5).status_code == 503
        s.get(srv.url + "/b", timeout=5)
        s.get(srv.url + "/b", timeout=5)
        with pytest.raises(CircuitOpenError):
            s.get(srv.url + "/a", timeout=5)


def test_retries_inside_one_send_count_once(clock: Clock) -> None:
    with HTTPTestServer(lambda r: Action(kind="rst")) as srv:
        cfg = GuardConfig(retries=2, breaker_fail_max=2)
        s = session(cfg)
        fail(s, srv.url, 2)
        attempts = len(srv.requests)
        with pytest.raises(CircuitOpenError):
            s.get(srv.url, timeout=5)
        assert len(srv.requests) == attempts
    # Two sends opened the breaker whatever number of attempts urllib3 made.
    assert attempts >= 2


def test_invalid_input_is_neutral(clock: Clock) -> None:
    s = session(GuardConfig(retries=0, breaker_fail_max=1))
    adapter = s.adapters["http://"]
    for _ in range(3):
        req = requests.Request("GET", "http://127.0.0.1:1/").prepare()
        req.url = "http://127.0.0.1:99999999/"  # rejected by urllib3 before any I/O
        with pytest.raises((ValueError, requests.RequestException)) as info:
            adapter.send(req, timeout=1)
        assert not isinstance(info.value, CircuitOpenError)


def test_breaker_off_never_opens(clock: Clock) -> None:
    with HTTPTestServer(lambda r: Action(status=503)) as srv:
        s = session(GuardConfig(retries=0, breaker=False, breaker_fail_max=1))
        for _ in range(5):
            assert s.get(srv.url, timeout=5).status_code == 503
        assert len(srv.requests) == 5
    assert len(registry()) == 0


def test_from_env_breaker_off(clock: Clock, refused: Tuple[socket.socket, str]) -> None:
    _, url = refused
    cfg = GuardConfig.from_env({"AZGUARD_BREAKER": "0", "AZGUARD_BREAKER_FAIL_MAX": "1"})
    s = session(cfg.replace(retries=0))
    errors = fail(s, url, 3)
    assert not any(isinstance(e, CircuitOpenError) for e in errors)


# -- scope: process-wide, per host, target behind a proxy, finer keys ------------------------------


def test_state_is_process_wide_and_per_host(
    clock: Clock, refused: Tuple[socket.socket, str], server: HTTPTestServer
) -> None:
    _, url = refused
    fail(session(), url, 3)
    # A brand-new Session and adapter (as module-level requests.get builds)
    # sees the same breaker; another host is unaffected.
    fresh = session()
    with pytest.raises(CircuitOpenError):
        fresh.get(url, timeout=2)
    assert fresh.get(server.url, timeout=5).text == "ok"


def test_behind_a_proxy_the_target_is_guarded(clock: Clock, server: HTTPTestServer) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    try:
        with ProxyServer() as proxy:
            proxies = {"http": proxy.url}
            s = session()
            fail(s, dead_url, 3, proxies=proxies)
            with pytest.raises(CircuitOpenError) as info:
                s.get(dead_url, timeout=5, proxies=proxies)
            assert info.value.host == dead_url
            # Same proxy, healthy target: not affected.
            assert s.get(server.url, timeout=5, proxies=proxies).text == "ok"
            assert len(proxy.client_socks) >= 4  # every attempt went through the proxy
            states = {b.key: b.state for b in registry().breakers()}
            # The proxy answered every time (502 for the dead target): its
            # own breaker is there, and closed.
            assert states == {dead_url: OPEN, server.url: CLOSED, proxy.url: CLOSED}
    finally:
        dead.close()


def test_key_function_scopes_finer(clock: Clock) -> None:
    def by_first_segment(req: requests.PreparedRequest) -> str:
        path = (req.path_url or "/").split("?")[0].split("/")
        return breaker_key(req) + "/" + (path[1] if len(path) > 1 else "")

    with HTTPTestServer(lambda r: Action(status=503 if r.target.startswith("/a") else 200)) as srv:
        s = session()
        s.adapters["http://"].azguard_breaker_key = by_first_segment
        for _ in range(3):
            s.get(srv.url + "/a/1", timeout=5)
        with pytest.raises(CircuitOpenError) as info:
            s.get(srv.url + "/a/2", timeout=5)
        assert info.value.host == srv.url + "/a"
        assert s.get(srv.url + "/b/1", timeout=5).status_code == 200


def test_key_function_must_return_str(clock: Clock, server: HTTPTestServer) -> None:
    s = session()
    s.adapters["http://"].azguard_breaker_key = lambda r: 42
    with pytest.raises(ConfigError, match="breaker key"):
        s.get(server.url, timeout=5)


# -- no lock across I/O --------------------------------------------------------------------------


def test_a_slow_request_does_not_block_others_to_the_same_host(clock: Clock) -> None:
    release = threading.Event()
    slow_started = threading.Event()

    def behaviour(req: Request) -> Action:
        if req.target == "/slow":
            slow_started.set()
            release.wait(10)
        return Action()

    with HTTPTestServer(behaviour) as srv:
        s = session(GuardConfig(retries=0), pool_maxsize=4)
        slow = threading.Thread(target=lambda: s.get(srv.url + "/slow", timeout=10))
        slow.start()
        try:
            assert slow_started.wait(5)
            # With pybreaker's call() this would wait for /slow (one lock per host).
            assert s.get(srv.url + "/fast", timeout=10).text == "ok"
            assert slow.is_alive()
        finally:
            release.set()
            slow.join(10)


def test_concurrent_failures_open_exactly_once(clock: Clock, recorder: Recorder) -> None:
    with HTTPTestServer(lambda r: Action(status=503)) as srv:
        s = session(GuardConfig(retries=0, breaker_fail_max=20), pool_maxsize=8)
        outcomes: List[str] = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(10):
                try:
                    s.get(srv.url, timeout=10)
                    result = "503"
                except CircuitOpenError:
                    result = "open"
                with lock:
                    outcomes.append(result)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(outcomes) == 80
    assert outcomes.count("503") >= 20
    assert outcomes.count("open") >= 1
    assert [t[1:] for t in recorder.transitions] == [(CLOSED, OPEN)]


# -- fallbacks end to end ---------------------------------------------------------------------


def test_synthetic_503_fallback_through_session_get(
    clock: Clock, recorder: Recorder, refused: Tuple[socket.socket, str]
) -> None:
    _, url = refused
    cfg = GuardConfig.from_env(
        {"AZGUARD_FALLBACK": "503", "AZGUARD_RETRIES": "0", "AZGUARD_BREAKER_FAIL_MAX": "2"}
    )
    s = session(cfg)
    fail(s, url, 2)
    clock.advance(10.2)
    with socket_audit() as events:
        r = s.get(url + "/path?q=1", timeout=2)
        streamed = s.get(url, timeout=2, stream=True)
    assert events == []
    assert r.status_code == 503
    assert r.reason == "Service Unavailable"
    assert r.headers[FALLBACK_HEADER] == "circuit-open"
    assert r.headers["retry-after"] == "20"
    assert r.text == f"circuit breaker open for {url}\n"
    assert r.url == url + "/path?q=1"
    assert not r.ok
    with pytest.raises(requests.HTTPError):
        r.raise_for_status()
    assert b"".join(streamed.iter_content(4)) == r.content
    assert recorder.fallbacks == [url, url]


def test_python_fallback_through_session_get(
    clock: Clock, recorder: Recorder, refused: Tuple[socket.socket, str]
) -> None:
    _, url = refused
    calls: List[Tuple[str, Exception]] = []

    def fallback(request: requests.PreparedRequest, error: Exception) -> requests.Response:
        calls.append((request.url or "", error))
        r = requests.Response()
        r.status_code = 200
        r._content = b'{"cached": true}'
        r.headers["Content-Type"] = "application/json"
        return r

    cfg = GuardConfig(retries=0, breaker_fail_max=2, fallback_status=503)
    s = session(cfg, fallback=fallback)
    assert s.adapters["http://"].azguard_fallback is fallback
    fail(s, url, 2)
    r = s.get(url + "/item", timeout=2)
    assert r.json() == {"cached": True}  # the Python fallback wins over the status
    assert calls[0][0] == url + "/item"
    assert isinstance(calls[0][1], CircuitOpenError)
    assert recorder.fallbacks == [url]


def test_failing_fallback_propagates_with_breaker_error_as_context(
    clock: Clock, recorder: Recorder, refused: Tuple[socket.socket, str]
) -> None:
    _, url = refused

    def fallback(request: requests.PreparedRequest, error: Exception) -> requests.Response:
        raise KeyError("no cached copy")

    s = session(GuardConfig(retries=0, breaker_fail_max=1), fallback=fallback)
    fail(s, url, 1)
    with pytest.raises(KeyError) as info:
        s.get(url, timeout=2)
    assert isinstance(info.value.__context__, CircuitOpenError)
    assert recorder.fallbacks == []

    s2 = session(GuardConfig(retries=0, breaker_fail_max=1), fallback=lambda r, e: "nope")  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="requests.Response") as cinfo:
        s2.get(url, timeout=2)
    assert isinstance(cinfo.value.__cause__, CircuitOpenError)


def test_broken_instrumentation_does_not_break_requests(
    clock: Clock, refused: Tuple[socket.socket, str]
) -> None:
    class Broken(NoopInstrumentation):
        def breaker_transition(self, host: str, old: str, new: str) -> None:
            raise RuntimeError("metrics down")

    add_instrumentation(Broken())
    _, url = refused
    s = session()
    fail(s, url, 3)
    with pytest.raises(CircuitOpenError):
        s.get(url, timeout=2)


# -- the registry's memory bound -------------------------------------------------------------------


def test_registry_is_bounded_and_keeps_open_breakers(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    reg = reset_breakers(clock=clock, max_hosts=8)
    try:
        settings = BreakerSettings(1, 30.0, 2, None)
        open_keys = [f"http://open{i}:80" for i in range(3)]
        for key in open_keys:
            b = reg.get(settings, key)
            b.record_failure(b.admit(clock()), clock())
        for i in range(40):
            clock.advance(1)
            reg.get(settings, f"http://closed{i}:80").admit(clock())
        assert len(reg) <= 8
        assert {b.key for b in reg.breakers()} >= set(open_keys)
        assert reg.evicted_open == 0
        # Nothing but open breakers left: the one due soonest goes, loudly.
        for i in range(8):
            b = reg.get(settings, f"http://dead{i}:80")
            b.record_failure(b.admit(clock()), clock())
            clock.advance(1)
        assert len(reg) <= 8
        assert reg.evicted_open >= 1
        assert "registry full" in caplog.text
        assert "http://open0:80" in caplog.text
    finally:
        reset_breakers()


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_hosts", 0), ("half_open_trials", 0), ("sync_interval", -1), ("clock", 5)],
)
def test_registry_rejects_bad_options(option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=option):
        reset_breakers(**{option: value})
    reset_breakers()


def test_adapter_stays_picklable_with_a_breaker(clock: Clock, server: HTTPTestServer) -> None:
    import pickle

    adapter = AzGuardAdapter(GuardConfig(retries=0))
    s = requests.Session()
    s.mount("http://", adapter)
    assert s.get(server.url, timeout=5).text == "ok"
    copy = pickle.loads(pickle.dumps(adapter))
    s.mount("http://", copy)
    assert s.get(server.url, timeout=5).text == "ok"


def test_breaker_key_is_a_constructor_argument_and_survives_pickling() -> None:
    import pickle

    from requests_azguard import AzGuardAdapter, ConfigError, GuardConfig, breaker_key

    adapter = AzGuardAdapter(GuardConfig(), breaker_key=breaker_key)
    assert pickle.loads(pickle.dumps(adapter)).azguard_breaker_key is breaker_key
    with pytest.raises(ConfigError, match="breaker_key"):
        AzGuardAdapter(GuardConfig(), breaker_key="host")  # type: ignore[arg-type]


# -- the per-adapter lookup ---------------------------------------------------------------------


def _prepared(url: str) -> requests.PreparedRequest:
    return requests.Request("GET", url).prepare()


def test_lookup_memo_follows_the_registry() -> None:
    from requests_azguard._breaker_registry import BreakerLookup

    reg = reset_breakers(max_hosts=8)
    try:
        lookup = BreakerLookup(GuardConfig())
        first = lookup(_prepared("http://a.example:80/x"))
        assert lookup(_prepared("http://a.example:80/x")) is first
        assert lookup(_prepared("http://A.example/y")) is first  # same key, other URL
        assert first is reg.get(BreakerSettings.of(GuardConfig()), "http://a.example:80")
        # An eviction drops breakers from the registry: the memo must not
        # keep serving one the registry has forgotten.
        for i in range(20):
            reg.get(BreakerSettings.of(GuardConfig()), f"http://filler{i}:80")
        assert first not in reg.breakers()
        again = lookup(_prepared("http://a.example:80/x"))
        assert again is not first and again in reg.breakers()
        # A reset replaces the registry.
        fresh = reset_breakers()
        assert lookup(_prepared("http://a.example:80/x")) in fresh.breakers()
    finally:
        reset_breakers()


def test_lookup_asks_a_custom_key_every_time() -> None:
    from requests_azguard._breaker_registry import BreakerLookup

    seen: List[str] = []

    def key(request: requests.PreparedRequest) -> str:
        seen.append(request.method or "")
        return "svc-" + (request.method or "")

    lookup = BreakerLookup(GuardConfig(), key)
    get = lookup(_prepared("http://a.example/"))
    post = lookup(requests.Request("POST", "http://a.example/").prepare())
    assert lookup(_prepared("http://a.example/")) is get
    assert get.key == "svc-GET" and post.key == "svc-POST"
    assert seen == ["GET", "POST", "GET"]


def test_lookup_memo_is_bounded() -> None:
    from requests_azguard._breaker_registry import BreakerLookup

    lookup = BreakerLookup(GuardConfig())
    for i in range(BreakerLookup.MAX_URLS * 3):
        lookup(_prepared(f"http://a.example/item?id={i}"))
    assert len(lookup._by_url) <= BreakerLookup.MAX_URLS
