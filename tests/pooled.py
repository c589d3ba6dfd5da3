"""The connections idle in a client's pools, found one way for every test.

Imports neither requests nor the guard: subprocess programs use it too, and
some of them report which of those modules were imported.
"""

from __future__ import annotations

from typing import Any, List, Optional

__all__ = ["only_pooled", "pooled_connections", "pooled_sockets"]


def _managers(client: Any) -> List[Any]:
    if hasattr(client, "pools"):  # a urllib3 PoolManager or ProxyManager
        return [client]
    if hasattr(client, "poolmanager"):  # a requests adapter: direct and behind proxies
        return [client.poolmanager, *getattr(client, "proxy_manager", {}).values()]
    if hasattr(client, "adapters"):  # a Session: each adapter once
        adapters = {id(a): a for a in client.adapters.values()}
        return [m for a in adapters.values() for m in _managers(a)]
    raise TypeError(f"no connection pools in {client!r}")


def pooled_connections(client: Any, url: Optional[str] = None) -> List[Any]:
    """The idle connections with a live socket in every pool of ``client``
    (a Session, a requests adapter or a urllib3 pool manager); with ``url``,
    of the adapter the Session mounts for it."""
    if url is not None:
        client = client.get_adapter(url)
    return [
        conn
        for manager in _managers(client)
        for key in list(manager.pools.keys())
        for conn in list(manager.pools[key].pool.queue)
        if conn is not None and conn.sock is not None
    ]


def pooled_sockets(client: Any, url: Optional[str] = None) -> List[Any]:
    """The sockets of ``pooled_connections(client, url)``."""
    return [conn.sock for conn in pooled_connections(client, url)]


def only_pooled(client: Any, url: Optional[str] = None) -> Any:
    """The one idle connection of ``pooled_connections(client, url)``."""
    conns = pooled_connections(client, url)
    assert len(conns) == 1, conns
    return conns[0]
