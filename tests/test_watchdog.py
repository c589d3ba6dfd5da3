"""The in-flight watchdog's options on real sockets, and relaxing idle connections.

A replayable request runs with a tight TCP_USER_TIMEOUT; the connection goes back to the pool still tight and is relaxed by
the next non-replayable request or once idle for RELAX_AFTER.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Dict

import pytest
import requests
from servers import HTTPTestServer, wait_until

import requests_azguard
from requests_azguard import GuardConfig, _watchdog

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
