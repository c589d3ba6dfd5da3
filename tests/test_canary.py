"""Canaries: fail loudly if a urllib3 or requests hook the library relies on disappears.

These hooks are private or semi-private and differ between urllib3 1.26 and
2.x; the library overrides them with pass-through signatures.  If one of these
tests fails after an upgrade, the guard would silently stop working.
"""

from __future__ import annotations

import inspect

import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.poolmanager


def test_pool_hooks_exist() -> None:
    pool = urllib3.connectionpool.HTTPConnectionPool
    for name in ("_new_conn", "_get_conn", "_put_conn", "_make_request", "ConnectionCls"):
        assert hasattr(pool, name), f"urllib3 HTTPConnectionPool.{name} is gone"
    assert hasattr(urllib3.connectionpool.HTTPSConnectionPool, "ConnectionCls")


def test_manager_hooks_exist() -> None:
    pm = urllib3.poolmanager.PoolManager
    assert hasattr(pm, "_new_pool"), "urllib3 PoolManager._new_pool is gone"
    assert "pool_classes_by_scheme" in vars(urllib3.poolmanager)
    assert issubclass(urllib3.poolmanager.ProxyManager, pm)
    conn = urllib3.connection.HTTPConnection("127.0.0.1", 9, socket_options=[(6, 1, 1)])
    assert conn.socket_options == [(6, 1, 1)], "urllib3 dropped HTTPConnection(socket_options=)"


def test_connection_send_path() -> None:
    conn = urllib3.connection.HTTPConnection
    assert hasattr(conn, "send") and hasattr(conn, "connect")


def test_requests_adapter_hooks() -> None:
    adapter = requests.adapters.HTTPAdapter
    for name in ("init_poolmanager", "proxy_manager_for", "send", "__attrs__", "proxy_headers"):
        assert hasattr(adapter, name), f"requests HTTPAdapter.{name} is gone"
    params = inspect.signature(adapter.init_poolmanager).parameters
    assert "pool_kwargs" in params


def test_urlopen_parameters_the_guard_spells_out() -> None:
    # GuardedPool.urlopen names urllib3's parameters up to body_pos and passes
    # them on by position: their order and defaults must be urllib3's.
    from requests_azguard._pool import GuardedPool

    ours = list(inspect.signature(GuardedPool.urlopen).parameters.values())
    theirs = list(
        inspect.signature(urllib3.connectionpool.HTTPConnectionPool.urlopen).parameters.values()
    )
    spelled = [p for p in ours if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in spelled] == [p.name for p in theirs[: len(spelled)]]
    assert spelled[-1].name == "body_pos"
    assert [p.default for p in spelled] == [p.default for p in theirs[: len(spelled)]]
    # The rest (2.x's preload_content and decode_content) are keyword-passable.
    assert ours[-1].kind is inspect.Parameter.VAR_KEYWORD
    assert all(
        p.default is not p.empty for p in theirs[len(spelled) :] if p.kind is not p.VAR_KEYWORD
    )
