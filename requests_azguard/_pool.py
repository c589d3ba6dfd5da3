"""urllib3 pool and pool-manager subclasses: where the guard meets urllib3.

Only urllib3's own extension points are overridden (``ConnectionCls``,
``_new_conn``, ``_get_conn``, ``_put_conn``, ``_make_request``, ``urlopen``,
``_new_pool`` and the manager's ``pool_classes_by_scheme``), each with a
pass-through signature, because these hooks differ between urllib3 1.26 and
2.x.  ``tests/test_canary.py`` fails loudly if one of them disappears.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any, Dict, Optional, Type

import urllib3.connection
from requests.structures import CaseInsensitiveDict
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager
from urllib3.util.retry import Retry

from . import _watchdog
from ._config import GuardConfig
from ._connection import AzHTTPConnection, AzHTTPSConnection, GuardedConnection
from ._instrument import NoopInstrumentation, hooks
from ._keepalive import HOST_CONSTANTS, HOST_KIND, inflight_options
from ._retry import IDEMPOTENCY_HEADERS, AzRetry

__all__ = [
    "AzHTTPConnectionPool",
    "AzHTTPSConnectionPool",
    "AzPoolManager",
    "AzProxyManager",
    "GuardedPool",
    "preload_scope",
]

# urllib3 2.x asks the connection (``is_connected``) and so runs the guard's
# full check in place of its own poll; 1.26 polls itself and the pool adds the
# rest.  Decided once.
_URLLIB3_ASKS_CONNECTION = hasattr(urllib3.connection.HTTPConnection, "is_connected")
# urllib3 2.x passes the Retry to _make_request; 1.26 only to urlopen.
_MAKE_REQUEST_GETS_RETRIES = (
    "retries" in inspect.signature(HTTPConnectionPool._make_request).parameters
)

_scope = threading.local()


class preload_scope:
    """Within it, urlopen reads the whole body before returning, so a failure
    while reading it is retried by urllib3 like any other (requests reads a
    ``stream=False`` body right after ``send()`` anyway).  A class rather than
    a generator-based context manager: it runs on every request."""

    __slots__ = ("_previous",)

    def __enter__(self) -> None:
        self._previous = getattr(_scope, "preload", False)
        _scope.preload = True

    def __exit__(self, *exc: object) -> None:
        _scope.preload = self._previous


def _body_replayable(body: Any) -> bool:
    if body is None or isinstance(body, (bytes, str, bytearray, memoryview)):
        return True
    # A file urllib3 can rewind (it records tell() and seeks back on retry).
    tell = getattr(body, "tell", None)
    if tell is None or not hasattr(body, "seek"):
        return False  # generators, iterators, pipes
    try:
        tell()
    except OSError:
        return False
    return True


class GuardedPool:
    """Mixin for both pool classes."""

    #: Set by the manager right after the pool is built.
    azguard_config: Optional[GuardConfig] = None
    host: str
    port: Optional[int]
    proxy: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per thread: the connection and Retry of the attempt in progress,
        # for AzRetry.increment, which urllib3 calls without the connection.
        self._azguard_local = threading.local()

    def azguard_attempt(self) -> Optional[GuardedConnection]:
        """The connection this thread's current attempt is using (for AzRetry)."""
        return getattr(self._azguard_local, "conn", None)

    def _new_conn(self) -> Any:
        conn = super()._new_conn()  # type: ignore[misc]
        if isinstance(conn, GuardedConnection) and self.azguard_config is not None:
            conn.azguard_config = self.azguard_config
            scheme = getattr(self, "scheme", "http")
            conn.azguard_host_label = f"{scheme}://{self.host}:{self.port}"
            proxy = self.proxy
            if proxy is not None and proxy.host:
                conn.azguard_dns_target = (proxy.host, proxy.port or 80)
            else:
                conn.azguard_dns_target = (self.host, self.port or 80)
        return conn

    def _get_conn(self, *args: Any, **kwargs: Any) -> Any:
        conn = super()._get_conn(*args, **kwargs)  # type: ignore[misc]
        if not isinstance(conn, GuardedConnection) or conn.azguard_config is None:
            return conn
        reason = conn.azguard_evicted_reason  # set if urllib3 2.x asked us
        if not _URLLIB3_ASKS_CONNECTION:
            if conn.sock is not None:
                reason = conn.azguard_reuse_check(poll=False)
                if reason is not None:
                    conn.close()  # type: ignore[attr-defined]
            elif conn.azguard_opened_at is not None:
                # urllib3 1.26's own poll found this pooled connection closed
                # by its peer (FIN or RST pending) and closed it.
                reason = "peer_closed"
                conn.azguard_opened_at = None
        conn.azguard_evicted_reason = None
        if conn.azguard_restore is not None:
            _watchdog.claim(conn)
        conn.azguard_begin_request()
        self._azguard_local.conn = conn
        instrumentation = hooks()
        if type(instrumentation) is not NoopInstrumentation:
            if reason is not None:
                instrumentation.connection_evicted(conn.azguard_host_label, reason)
            elif conn.sock is not None:
                instrumentation.connection_reused(conn.azguard_host_label)
        return conn

    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, GuardedConnection):
            conn.azguard_put_back()
            tls = self._azguard_local
            if getattr(tls, "conn", None) is conn:
                tls.conn = None
        super()._put_conn(conn)  # type: ignore[misc]

    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if getattr(_scope, "preload", False):
            kwargs["preload_content"] = True
            kwargs["decode_content"] = True
        if not _MAKE_REQUEST_GETS_RETRIES:
            # urllib3 1.26 does not hand the Retry to _make_request.
            self._azguard_local.retries = kwargs.get("retries", args[2] if len(args) > 2 else None)
        return super().urlopen(method, url, *args, **kwargs)  # type: ignore[misc]

    def _make_request(self, conn: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        config = self.azguard_config
        if config is not None and isinstance(conn, GuardedConnection):
            if _MAKE_REQUEST_GETS_RETRIES:
                retries = kwargs.get("retries")
            else:
                retries = getattr(self._azguard_local, "retries", None)
            self._azguard_prepare(
                conn, config, method, kwargs.get("body"), kwargs.get("headers"), retries
            )
        return super()._make_request(conn, method, url, *args, **kwargs)  # type: ignore[misc]

    def _azguard_prepare(
        self,
        conn: GuardedConnection,
        config: GuardConfig,
        method: str,
        body: Any,
        headers: Any,
        retries: Any,
    ) -> None:
        body_ok = body is None or _body_replayable(body)
        conn.azguard_body_replayable = body_ok
        if isinstance(retries, AzRetry):
            idempotent = retries.azguard_idempotent(method)
            mode = retries.azguard_mode
        else:
            idempotent = method.upper() in Retry.DEFAULT_ALLOWED_METHODS
            mode = config.retry_non_idempotent
        # The key only matters for a method that is not idempotent anyway.
        keyed = not idempotent and bool(headers) and _has_idempotency_key(headers)
        conn.azguard_idempotency_key = keyed
        ack_timeout = config.ack_timeout
        # Only a request that may be replayed once written gets the tight
        # verdict; for the others the generous kernel timeout stands, since a
        # verdict could only turn a slow answer into a lost one.
        if ack_timeout is None or not body_ok or not (idempotent or keyed or mode == "always"):
            if conn.azguard_restore is not None:
                conn.azguard_relax()  # still tight from a replayable request
            return
        if conn.azguard_restore is not None and conn.sock is not None:
            return  # still tight from the previous request on this connection
        user_timeout = conn.azguard_inflight_user_timeout(ack_timeout)
        cached = conn.azguard_inflight_cache
        if cached is None or cached[0] != user_timeout:
            tighten, restore = inflight_options(
                config, HOST_CONSTANTS, HOST_KIND, user_timeout, probe_idle=ack_timeout
            )
            cached = conn.azguard_inflight_cache = (user_timeout, tighten, restore)
        if cached[1]:
            conn.azguard_tighten(cached[1], cached[2])


def _has_idempotency_key(headers: Any) -> bool:
    if isinstance(headers, CaseInsensitiveDict):
        # requests' own headers: two case-insensitive lookups, no scan.
        return any(headers.get(name) is not None for name in IDEMPOTENCY_HEADERS)
    return any(str(k).lower() in IDEMPOTENCY_HEADERS for k in headers)


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
