"""Breaker state shared through a real redis-server, and life without it.

"Processes" are real subprocesses (``redis_fixtures.BreakerProcess``) or, for
finer steps, separate ``BreakerRegistry`` objects in this process, each with
its own Redis client, which is all a second process would have.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from typing import Iterator, List, Tuple

import pytest
import requests
from conftest import Clock
from redis_fixtures import (  # noqa: F401 - fixtures
    BreakerProcess,
    RedisServer,
    redis_server,
    redis_server_with_password,
)
from servers import Action, HTTPTestServer

from requests_azguard import CircuitOpenError, GuardConfig, mount
from requests_azguard._breaker import CLOSED, HALF_OPEN, OPEN, BreakerSettings, HostBreaker
from requests_azguard._breaker_redis import NAMESPACE
from requests_azguard._breaker_registry import BreakerRegistry, registry, reset_breakers

pytestmark = pytest.mark.redis

KEY = "http://svc.internal:80"
HOST_FAILURES = requests.RequestException


# A wall-clock reading of today's size: Redis keeps the breakers' times.
T0 = 1_700_000_000.0


@pytest.fixture
def refused() -> Iterator[Tuple[socket.socket, str]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock, f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    yield
    reset_breakers()


def settings(url: str, fail_max: int = 3) -> BreakerSettings:
    return BreakerSettings(fail_max, 30.0, 2, url)


def trip(b: HostBreaker, now: float, times: int = 3) -> None:
    for _ in range(times):
        b.record_failure(b.admit(now), now)


def redis_hash(server: RedisServer, key: str) -> dict:
    client = server.client()
    raw = client.hgetall(f"{NAMESPACE}:{key}")  # type: ignore[attr-defined]
    return {k.decode(): v.decode() for k, v in raw.items()}


# -- two processes, a real Redis ---------------------------------------------------------------


def test_two_processes_share_trips_and_survive_redis_dying(
    redis_server: RedisServer,  # noqa: F811
    server: HTTPTestServer,
) -> None:
    dead = []
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead.append(s)
    dead_urls = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in dead]
    start = 1_700_000_000.0
    a = BreakerProcess(redis_server.url, start, reattach_interval=2.0)
    b = BreakerProcess(redis_server.url, start, reattach_interval=2.0)
    try:

        def advance(seconds: float) -> None:
            a.advance(seconds)
            b.advance(seconds)

        # 1. Failures count fleet-wide: one in B and two in A trip the breaker.
        assert b.get(dead_urls[0])["outcome"] == "error"
        assert [a.get(dead_urls[0])["outcome"] for _ in range(2)] == ["error"] * 2
        assert redis_hash(redis_server, dead_urls[0])["state"] == OPEN
        # B, which cached the state as closed, fails fast once its cache is
        # stale (sync_interval, 0.5 s); a process new to the host at once.
        advance(0.5)
        assert b.get(dead_urls[0]) == {"outcome": "open", "connects": 0}
        c = BreakerProcess(redis_server.url, start + 0.5)
        try:
            assert c.get(dead_urls[0]) == {"outcome": "open", "connects": 0}
        finally:
            c.close()

        # 2. Redis dies mid-run: no request is lost, breakers trip locally.
        redis_server.kill()
        advance(0.5)
        for proc in (a, b):
            for _ in range(5):
                answer = proc.get(server.url)
                assert (answer["outcome"], answer["status"]) == ("ok", 200)
        answers = [b.get(dead_urls[1]) for _ in range(4)]
        assert [x["outcome"] for x in answers] == ["error", "error", "error", "open"]
        assert answers[-1]["connects"] == 0
        assert b.send(op="link") == {"attached": [False], "outages": 1}
        assert a.send(op="link") == {"attached": [False], "outages": 1}

        # 3. Redis comes back (empty): both re-attach and share again.
        redis_server.start()
        advance(2.0)
        assert [a.get(dead_urls[2])["outcome"] for _ in range(3)] == ["error"] * 3
        advance(0.5)
        assert b.get(dead_urls[2]) == {"outcome": "open", "connects": 0}
        assert b.send(op="link") == {"attached": [True], "outages": 1}
        # B's trip made while Redis was away is published on its next sync.
        assert "state" not in redis_hash(redis_server, dead_urls[1])
        assert b.get(dead_urls[1]) == {"outcome": "open", "connects": 0}
        assert redis_hash(redis_server, dead_urls[1])["state"] == OPEN
        advance(0.5)
        assert a.get(dead_urls[1]) == {"outcome": "open", "connects": 0}
    finally:
        a.close()
        b.close()
        for s in dead:
            s.close()


# -- the shared state machine, step by step -------------------------------------------------


def test_fleet_counts_failures_together(redis_server: RedisServer) -> None:  # noqa: F811
    clock = Clock(T0)
    r1 = BreakerRegistry(clock=clock)
    r2 = BreakerRegistry(clock=clock)
    try:
        b1 = r1.get(settings(redis_server.url), KEY)
        b2 = r2.get(settings(redis_server.url), KEY)
        trip(b1, clock(), 2)
        b2.record_failure(b2.admit(clock()), clock())  # the fleet's third
        assert b2.state == OPEN
        assert redis_hash(redis_server, KEY)["state"] == OPEN
        clock.advance(0.5)
        with pytest.raises(CircuitOpenError) as info:
            b1.admit(clock())
        assert info.value.retry_at == pytest.approx(clock() - 0.5 + 30.0)
    finally:
        r1.close()
        r2.close()


def test_one_trial_for_the_whole_fleet(redis_server: RedisServer) -> None:  # noqa: F811
    clock = Clock(T0)
    r1 = BreakerRegistry(clock=clock)
    r2 = BreakerRegistry(clock=clock)
    try:
        b1 = r1.get(settings(redis_server.url), KEY)
        b2 = r2.get(settings(redis_server.url), KEY)
        trip(b1, clock())
        clock.advance(30.0)
        ticket = b1.admit(clock())
        assert ticket and b1.state == HALF_OPEN
        assert redis_hash(redis_server, KEY)["state"] == HALF_OPEN
        with pytest.raises(CircuitOpenError):
            b2.admit(clock())  # A holds the fleet's only trial
        assert b2.state == OPEN
        b1.record_success(ticket, clock())
        assert b1.state == CLOSED
        assert redis_hash(redis_server, KEY)["state"] == CLOSED
        clock.advance(0.5)
        assert b2.admit(clock()) == 0
        assert b2.state == CLOSED
    finally:
        r1.close()
        r2.close()


def test_denied_trial_waits_for_the_other_process_without_asking_redis_again(
    redis_server: RedisServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(T0)
    r1 = BreakerRegistry(clock=clock)
    r2 = BreakerRegistry(clock=clock)
    try:
        b1 = r1.get(settings(redis_server.url), KEY)
        b2 = r2.get(settings(redis_server.url), KEY)
        trip(b1, clock())
        clock.advance(0.5)
        with pytest.raises(CircuitOpenError):
            b2.admit(clock())  # b2 learns the trip
        clock.advance(29.5)
        b2._next_sync = clock() + 10  # b2's cache is still fresh when the trial is due
        ticket = b1.admit(clock())
        assert ticket
        assert b2.shared is not None
        claims: List[float] = []
        real_claim = b2.shared.claim
        monkeypatch.setattr(
            b2.shared, "claim", lambda now, *a: claims.append(now) or real_claim(now, *a)
        )
        for _ in range(5):
            with pytest.raises(CircuitOpenError) as info:
                b2.admit(clock())
        assert len(claims) == 1  # asked once, then waited
        assert b2.state == OPEN
        assert info.value.retry_at == pytest.approx(clock() + 30.0)  # b1's lease
    finally:
        r1.close()
        r2.close()


def test_pybreaker_reads_the_shared_state(redis_server: RedisServer) -> None:  # noqa: F811
    import pybreaker

    clock = Clock(T0)
    reg = BreakerRegistry(clock=clock)
    try:
        b = reg.get(settings(redis_server.url), KEY)
        trip(b, clock())
        assert b.shared is not None
        cb = pybreaker.CircuitBreaker(state_storage=b.shared)
        assert cb.current_state == pybreaker.STATE_OPEN
        assert b.shared.opened_at is not None
        assert b.shared.opened_at.timestamp() == pytest.approx(clock())
        assert b.storage.state == pybreaker.STATE_OPEN  # local: pybreaker's memory storage
    finally:
        reg.close()


# -- Redis unreachable -----------------------------------------------------------------------------


def test_unreachable_redis_logged_once_counted_and_local_state_works(
    caplog: pytest.LogCaptureFixture, refused: Tuple[socket.socket, str]
) -> None:
    dead_redis = socket.socket()
    dead_redis.bind(("127.0.0.1", 0))
    url = f"redis://:pw-never-logged@127.0.0.1:{dead_redis.getsockname()[1]}/0"
    clock = Clock(T0)
    reset_breakers(clock=clock, reattach_interval=2.0)
    try:
        with HTTPTestServer(lambda r: Action(status=503)) as srv:
            s = mount(requests.Session(), GuardConfig(retries=0, breaker_fail_max=3, redis_url=url))
            with caplog.at_level(logging.WARNING, logger="requests_azguard"):
                for _ in range(3):
                    assert s.get(srv.url, timeout=5).status_code == 503
                with pytest.raises(CircuitOpenError):
                    s.get(srv.url, timeout=5)
                clock.advance(2.0)
                with pytest.raises(CircuitOpenError):
                    s.get(srv.url, timeout=5)  # probes Redis again: still down
        [link] = registry().links()
        assert link.attached is False
        assert link.outages == 1
        assert link.errors >= 2
        warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1
        assert "pw-never-logged" not in caplog.text
        assert "***" in caplog.text
    finally:
        dead_redis.close()


def test_blackholed_redis_stalls_one_request_per_reattach_interval(
    server: HTTPTestServer,
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # handshakes complete, nobody ever answers
    clock = Clock(T0)
    reset_breakers(clock=clock, reattach_interval=5.0, redis_socket_timeout=0.05, sync_interval=0)
    try:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        s = mount(requests.Session(), GuardConfig(retries=0, redis_url=url))
        for _ in range(20):
            assert s.get(server.url, timeout=5).status_code == 200
        [link] = registry().links()
        # Only the first request waited for Redis; the other 19 did not try.
        assert link.errors == 1
        clock.advance(5.0)
        assert s.get(server.url, timeout=5).status_code == 200
        assert link.errors == 2
    finally:
        silent.close()


# -- the password never surfaces --------------------------------------------------------------------


def test_redis_password_is_redacted_everywhere(
    redis_server_with_password: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    refused: Tuple[socket.socket, str],
) -> None:
    server = redis_server_with_password
    password = server.password
    assert password
    _, dead = refused
    clock = Clock(T0)
    reset_breakers(clock=clock)
    surfaces: List[str] = []
    with caplog.at_level(logging.DEBUG, logger="requests_azguard"):
        # Right password: state really goes through the authenticated Redis.
        cfg = GuardConfig(retries=0, breaker_fail_max=2, redis_url=server.url)
        s = mount(requests.Session(), cfg)
        for _ in range(2):
            with pytest.raises(HOST_FAILURES):
                s.get(dead, timeout=2)
        with pytest.raises(CircuitOpenError) as info:
            s.get(dead, timeout=2)
        assert redis_hash(server, dead)["state"] == OPEN
        surfaces += [str(info.value), repr(info.value), repr(cfg), str(cfg)]
        # Wrong password: authentication fails, logged.
        wrong = server.url.replace(password, password + "-wrong")
        cfg2 = GuardConfig(retries=0, breaker_fail_max=2, redis_url=wrong)
        s2 = mount(requests.Session(), cfg2)
        with pytest.raises(HOST_FAILURES):
            s2.get(dead + "/x", timeout=2)
    reg = registry()
    surfaces += [repr(reg), *map(repr, reg.breakers()), *map(repr, reg.links())]
    surfaces += [repr(b.settings) for b in reg.breakers()]
    surfaces += [repr(b.shared) for b in reg.breakers()]
    surfaces.append(caplog.text)
    surfaces += [repr(r.args) for r in caplog.records]
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    env = dict(os.environ, AZGUARD_REDIS_URL=server.url)
    out = subprocess.run(
        [sys.executable, "-m", "requests_azguard", "env"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "AZGUARD_REDIS_URL" in out.stdout
    surfaces += [out.stdout, out.stderr]
    for text in surfaces:
        assert password not in text
    assert "***" in out.stdout


def test_threads_racing_redis_round_trips_see_each_transition_once(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    # sync_interval=0: every request reads Redis, so reads overlap other
    # threads' writes all the time; a read taken before a write lands must
    # not undo this process's newer local state (no flapping).
    from requests_azguard._instrument import NoopInstrumentation, add_instrumentation

    class Transitions(NoopInstrumentation):
        def __init__(self) -> None:
            self.seen: List[Tuple[str, str]] = []

        def breaker_transition(self, host: str, old: str, new: str) -> None:
            self.seen.append((old, new))

    rec = Transitions()
    add_instrumentation(rec)
    clock = Clock(T0)
    reset_breakers(clock=clock, sync_interval=0)
    status = {"code": 503}
    with HTTPTestServer(lambda r: Action(status=status["code"])) as srv:
        cfg = GuardConfig(retries=0, breaker_fail_max=10, redis_url=redis_server.url)
        s = mount(requests.Session(), cfg, pool_maxsize=8)

        def run() -> List[object]:
            out: List[object] = []
            lock = threading.Lock()

            def worker() -> None:
                for _ in range(20):
                    try:
                        result: object = s.get(srv.url, timeout=10).status_code
                    except CircuitOpenError:
                        result = "open"
                    with lock:
                        out.append(result)

            threads = [threading.Thread(target=worker) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            return out

        first = run()
        assert first.count(503) >= 10 and "open" in first
        assert rec.seen == [(CLOSED, OPEN)]
        status["code"] = 200
        clock.advance(30.0)
        second = run()
        assert 200 in second
    assert rec.seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert redis_hash(redis_server, srv.url)["state"] == CLOSED
