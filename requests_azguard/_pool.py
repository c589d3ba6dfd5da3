"""urllib3 pool and pool-manager subclasses: where the guard meets urllib3.

Only urllib3's own extension points are overridden (``ConnectionCls``,
``_new_conn``, ``_get_conn``, ``_put_conn``, ``_new_pool`` and the manager's
``pool_classes_by_scheme``), each with a pass-through signature, because these
hooks differ between urllib3 1.26 and 2.x.  ``tests/test_canary.py`` fails
loudly if one of them disappears.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Type

from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager

from ._config import GuardConfig
from ._connection import AzHTTPConnection, AzHTTPSConnection, GuardedConnection

__all__ = [
    "AzHTTPConnectionPool",
    "AzHTTPSConnectionPool",
    "AzPoolManager",
    "AzProxyManager",
    "GuardedPool",
]


class GuardedPool:
    """Mixin for both pool classes."""

    #: Set by the manager right after the pool is built.
    azguard_config: Optional[GuardConfig] = None

    def _new_conn(self) -> Any:
        conn = super()._new_conn()  # type: ignore[misc]
        if isinstance(conn, GuardedConnection):
            conn.azguard_config = self.azguard_config
        return conn

    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, GuardedConnection):
            conn.azguard_idle_since = time.monotonic()
        super()._put_conn(conn)  # type: ignore[misc]


class AzHTTPConnectionPool(GuardedPool, HTTPConnectionPool):
    ConnectionCls = AzHTTPConnection


class AzHTTPSConnectionPool(GuardedPool, HTTPSConnectionPool):
    ConnectionCls = AzHTTPSConnection


def _pool_classes() -> Dict[str, Type[HTTPConnectionPool]]:
    # A fresh dict per manager: urllib3's module-level dict is shared by
    # reference between every PoolManager in the process.
    return {"http": AzHTTPConnectionPool, "https": AzHTTPSConnectionPool}


class _GuardedManager:
    azguard_config: Optional[GuardConfig]

    def _new_pool(self, *args: Any, **kwargs: Any) -> Any:
        pool = super()._new_pool(*args, **kwargs)  # type: ignore[misc]
        if isinstance(pool, GuardedPool):
            pool.azguard_config = self.azguard_config
        return pool


class AzPoolManager(_GuardedManager, PoolManager):
    """PoolManager whose pools are guarded."""

    def __init__(self, *args: Any, azguard_config: GuardConfig, **kwargs: Any) -> None:
        self.azguard_config = azguard_config
        super().__init__(*args, **kwargs)
        self.pool_classes_by_scheme = _pool_classes()


class AzProxyManager(_GuardedManager, ProxyManager):
    """ProxyManager whose pools (plain proxying and CONNECT tunnels) are guarded."""

    def __init__(self, *args: Any, azguard_config: GuardConfig, **kwargs: Any) -> None:
        self.azguard_config = azguard_config
        super().__init__(*args, **kwargs)
        self.pool_classes_by_scheme = _pool_classes()
