"""Retries that are safe by construction, against real servers.

Servers count deliveries by request id, so "never sent twice" is checked on
the server's side of the socket, not inferred from the client.
"""

from __future__ import annotations

import io
import itertools
import threading
from typing import Any, Dict, List

import pytest
import requests
from servers import Action, HTTPTestServer, Request, rst_close
from urllib3.util.retry import Retry
from urllib3.util.wait import wait_for_read

import requests_azguard
from requests_azguard import GuardConfig
from requests_azguard._instrument import NoopInstrumentation, add_instrumentation
from requests_azguard._policy import Decision
from requests_azguard._retry import AzRetry, ReplayFacts, replay_reason

RETRY = Decision(evict=True, retry=True, blame="connection")


@pytest.mark.parametrize(
    "facts, mode, expected",
    [
        (ReplayFacts(True, False, False, True), "unsent", "idempotent"),
        (ReplayFacts(False, True, False, True), "unsent", "unsent"),
        (ReplayFacts(False, True, False, True), "never", None),
        (ReplayFacts(False, False, False, True), "unsent", None),
        (ReplayFacts(False, False, True, True), "never", "idempotency_key"),
        (ReplayFacts(False, False, False, True), "always", "always"),
        # A body that cannot be rewound is replayed only if nothing was sent.
        (ReplayFacts(True, False, False, False), "always", None),
        (ReplayFacts(False, True, False, False), "unsent", "unsent"),
    ],
)
def test_replay_reason(facts: ReplayFacts, mode: str, expected: Any) -> None:
    assert replay_reason(RETRY, facts, mode) == expected


def test_policy_can_forbid_any_replay() -> None:
    facts = ReplayFacts(True, True, True, True)
    assert replay_reason(Decision(blame="host", fail_fast=True), facts, "always") is None
    assert replay_reason(Decision(evict=True), facts, "always") is None


class Deliveries:
    """A server behaviour counting deliveries per X-Request-Id."""

    def __init__(self, reset_reused_once: bool = False) -> None:
        self.lock = threading.Lock()
        self.reset_reused_once = reset_reused_once
        self.reset_conns: set = set()

    def __call__(self, req: Request) -> Action:
        rid = req.headers.get("x-request-id", "")
        with self.lock:
            first_reuse = (
                self.reset_reused_once and req.conn_seq >= 2 and req.conn_id not in self.reset_conns
            )
            if first_reuse:
                self.reset_conns.add(req.conn_id)
        # The request was read in full before this decision: it counts as
        # delivered whether or not the server then resets.
        return Action(kind="rst" if first_reuse else "respond", body=rid.encode())


def _count_deliveries(srv: HTTPTestServer) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for req in srv.requests:
        rid = req.headers.get("x-request-id", "")
        counts[rid] = counts.get(rid, 0) + 1
    return counts


CFG = GuardConfig(breaker=False)


def test_thousand_gets_survive_resets_of_reused_connections() -> None:
    beh = Deliveries(reset_reused_once=True)
    with HTTPTestServer(beh) as srv:
        s = requests_azguard.mount(requests.Session(), CFG)
        for i in range(1000):
            r = s.get(srv.url, headers={"X-Request-Id": f"g{i}"}, timeout=5)
            assert r.text == f"g{i}"
        assert len(beh.reset_conns) >= 400, "the server reset too few reused connections"


def test_thousand_posts_never_delivered_twice() -> None:
    beh = Deliveries(reset_reused_once=True)
    failed = []
    with HTTPTestServer(beh) as srv:
        s = requests_azguard.mount(requests.Session(), CFG)
        for i in range(1000):
            try:
                s.post(srv.url, data=b"payload", headers={"X-Request-Id": f"p{i}"}, timeout=5)
            except requests.ConnectionError:
                failed.append(f"p{i}")
        deliveries = _count_deliveries(srv)
    assert max(deliveries.values()) == 1, "a POST was delivered twice"
    assert len(deliveries) == 1000  # every POST reached the server once
    # Each failure was a POST written in full and reset after the server read
    # it: something was written, so it must not be replayed.
    assert len(failed) == len(beh.reset_conns) >= 400
    assert all(deliveries[rid] == 1 for rid in failed)


class _ResetWhenReused(NoopInstrumentation):
    """Reset the server side of a connection right after the guard validated it
    for reuse, and wait until the client's kernel has the RST: the race in
    which a request fails before one byte of it is written."""

    def __init__(self, srv: HTTPTestServer, session: requests.Session, url: str) -> None:
        self.srv, self.session, self.url = srv, session, url
        self.armed = False
        # One entry per firing: whether the RST reached the one connection
        # being reused.  Recorded, not asserted: the dispatcher swallows what
        # a hook raises, so the test asserts on this afterwards.
        self.rst_arrived: List[bool] = []

    def connection_reused(self, host: str) -> None:
        if not self.armed:
            return
        self.armed = False
        with self.srv.lock:
            socks = list(self.srv.connections)
        for sock in socks:
            rst_close(sock)
        served = _served_connections(self.session, self.url)
        self.rst_arrived.append(len(served) == 1 and wait_for_read(served[0].sock, timeout=5.0))


def _served_connections(session: requests.Session, url: str) -> List[Any]:
    # The pool holds one connection, checked out right now: the one that
    # served the previous request (still in the pool's queue slot as None).
    adapter = session.get_adapter(url)
    manager = adapter.poolmanager  # type: ignore[attr-defined]
    return [
        conn
        for key in manager.pools.keys()  # noqa: SIM118 - keys() is the safe snapshot
        for conn in _SERVED.get(id(manager.pools[key]), [])
        if conn.sock is not None
    ]


_SERVED: Dict[int, List[Any]] = {}


@pytest.fixture(autouse=True)
def _record_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    from requests_azguard._pool import GuardedPool

    original = GuardedPool._new_conn

    def recording(pool: Any) -> Any:
        conn = original(pool)
        _SERVED.setdefault(id(pool), []).append(conn)
        return conn

    _SERVED.clear()
    monkeypatch.setattr(GuardedPool, "_new_conn", recording)


@pytest.mark.parametrize("mode, replayed", [("unsent", True), ("never", False)])
def test_post_recovered_exactly_when_nothing_was_written(mode: str, replayed: bool) -> None:
    with HTTPTestServer() as srv:
        s = requests_azguard.mount(requests.Session(), CFG.replace(retry_non_idempotent=mode))
        hook = _ResetWhenReused(srv, s, srv.url)
        add_instrumentation(hook)
        assert s.post(srv.url, data=b"one", headers={"X-Request-Id": "a"}, timeout=5).ok
        hook.armed = True
        if replayed:
            r = s.post(srv.url, data=b"two", headers={"X-Request-Id": "b"}, timeout=5)
            assert r.ok
        else:
            with pytest.raises(requests.ConnectionError):
                s.post(srv.url, data=b"two", headers={"X-Request-Id": "b"}, timeout=5)
        assert hook.rst_arrived == [True]
        deliveries = _count_deliveries(srv)
    assert deliveries.get("b", 0) == (1 if replayed else 0)


def test_generator_body_replayed_only_when_untouched() -> None:
    with HTTPTestServer() as srv:
        s = requests_azguard.mount(requests.Session(), CFG)
        hook = _ResetWhenReused(srv, s, srv.url)
        add_instrumentation(hook)
        assert s.get(srv.url, timeout=5).ok
        hook.armed = True
        r = s.post(
            srv.url, data=iter([b"chunk-1", b"chunk-2"]), headers={"X-Request-Id": "g"}, timeout=5
        )
        assert r.ok
        assert hook.rst_arrived == [True]
        (delivered,) = [q for q in srv.requests if q.headers.get("x-request-id") == "g"]
    assert delivered.body == b"chunk-1chunk-2"


def test_generator_body_never_replayed_once_written_even_when_always() -> None:
    cfg = CFG.replace(retry_non_idempotent="always")
    with HTTPTestServer(lambda req: Action(kind="rst")) as srv:
        s = requests_azguard.mount(requests.Session(), cfg)
        with pytest.raises(requests.ConnectionError):
            s.post(srv.url, data=iter([b"a", b"b"]), headers={"X-Request-Id": "x"}, timeout=5)
        assert _count_deliveries(srv) == {"x": 1}


def test_seekable_file_body_replayed_whole_when_always() -> None:
    cfg = CFG.replace(retry_non_idempotent="always")
    calls = itertools.count()
    with HTTPTestServer(lambda req: Action(kind="rst") if next(calls) == 0 else Action()) as srv:
        s = requests_azguard.mount(requests.Session(), cfg)
        r = s.post(srv.url, data=io.BytesIO(b"file-body"), timeout=5)
        assert r.ok
        assert [q.body for q in srv.requests] == [b"file-body", b"file-body"]


@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Idempotency-Key"])
def test_idempotency_key_allows_replay_of_written_post(header: str) -> None:
    calls = itertools.count()
    with HTTPTestServer(lambda req: Action(kind="rst") if next(calls) == 0 else Action()) as srv:
        s = requests_azguard.mount(requests.Session(), CFG.replace(retry_non_idempotent="never"))
        assert s.post(srv.url, data=b"x", headers={header: "k-1"}, timeout=5).ok
        assert len(srv.requests) == 2


def test_retries_setting_bounds_the_attempts() -> None:
    with HTTPTestServer(lambda req: Action(kind="rst")) as srv:
        s = requests_azguard.mount(requests.Session(), CFG.replace(retries=2))
        with pytest.raises(requests.ConnectionError):
            s.get(srv.url, timeout=5)
        assert len(srv.requests) == 3  # the first attempt and two retries
        s = requests_azguard.mount(requests.Session(), CFG, max_retries=0)
        before = len(srv.requests)
        with pytest.raises(requests.ConnectionError):
            s.get(srv.url, timeout=5)
        assert len(srv.requests) == before + 1


def test_user_retry_settings_kept_and_rules_added() -> None:
    retry = Retry(total=4, connect=1, read=2, backoff_factor=0.0, allowed_methods=["GET"])
    adapter = requests_azguard.AzGuardAdapter(CFG, max_retries=retry)
    assert isinstance(adapter.max_retries, AzRetry)
    assert (adapter.max_retries.total, adapter.max_retries.connect, adapter.max_retries.read) == (
        4,
        1,
        2,
    )
    # PUT is no longer idempotent for this caller: a reset PUT is not replayed.
    with HTTPTestServer(lambda req: Action(kind="rst")) as srv:
        s = requests.Session()
        s.mount("http://", adapter)
        with pytest.raises(requests.ConnectionError):
            s.put(srv.url, data=b"x", timeout=5)
        assert len(srv.requests) == 1
    with pytest.raises(requests_azguard.ConfigError, match="retry_non_idempotent"):
        AzRetry(3, azguard_mode="sometimes")


def test_azretry_is_an_immutable_retry_value() -> None:
    r = AzRetry(3, azguard_mode="never")
    r2 = r.new(total=1)
    assert isinstance(r2, AzRetry) and r2.azguard_mode == "never" and r.total == 3
