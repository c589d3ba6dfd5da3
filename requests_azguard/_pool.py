"""urllib3 pool and pool-manager subclasses: where the guard meets urllib3.

Only urllib3's own extension points are overridden (``ConnectionCls``,
``_new_conn``, ``_get_conn``, ``_put_conn``, ``urlopen``,
``_new_pool`` and the manager's ``pool_classes_by_scheme``).  Where urllib3
1.26 and 2.x agree on a hook's leading parameters they are spelled out (they
run on every request, and packing ``*args``/``**kwargs`` costs); the rest pass
through.  ``tests/test_canary.py`` fails loudly if one of them disappears.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Final, List, Optional, Protocol, Tuple, Type

import urllib3.response
from requests.structures import CaseInsensitiveDict
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from . import _fork
from ._config import GuardConfig
from ._connection import LEGACY_URLLIB3, AzHTTPConnection, AzHTTPSConnection, GuardedConnection
from ._instrument import NoopInstrumentation, hooks
from ._keepalive import HOST_CONSTANTS, HOST_KIND, SocketOption, resting_options
from ._retry import IDEMPOTENCY_HEADERS, AzRetry

__all__ = [
    "AzHTTPConnectionPool",
    "AzHTTPSConnectionPool",
    "AzPoolManager",
    "AzProxyManager",
    "FrontDoor",
    "GuardedPool",
    "PreloadTimeout",
]


class PreloadTimeout(Timeout):
    """The timeout of a request whose whole body urlopen reads before
    returning, so that a failure while reading it is retried by urllib3 like
    any other (requests reads a ``stream=False`` body right after ``send()``
    anyway).

    The adapter passes it as the request's timeout: requests hands a
    ``Timeout`` to ``urlopen`` unchanged, so the fact travels down with the
    call that it is about, and urllib3 clones it into a plain ``Timeout``
    before using it.
    """


#: urllib3's own default for urlopen's ``timeout`` (a sentinel object on
#: 1.26, an enum member on 2.x): the sixth of its defaults on both lines.
_DEFAULT_TIMEOUT: Final = HTTPConnectionPool.urlopen.__defaults__[5]  # type: ignore[index]

#: The facts of a connection taken outside urlopen (urllib3's own helpers).
_NO_REQUEST: Final = (False, False, True)


class _Attempt(threading.local):
    """Per thread and pool: the facts of the request that urlopen saw, until
    _get_conn hands them to the connection it takes.

    It also remembers the last request's facts by their shape (the Retry
    object and the method) for a request without a body whose
    method the Retry may replay: then the headers cannot change them, and a
    busy loop computes them once.
    """

    def __init__(self) -> None:
        self.facts: Optional[Tuple[bool, bool, bool]] = None
        self.shape_retries: Any = _NO_SHAPE
        self.shape_method = ""
        self.shape_facts: Tuple[bool, bool, bool] = _NO_REQUEST
        #: Inside the front door's breaker gate (its urlopen re-enters).
        self.depth = 0


#: No Retry is this object: no request has a remembered shape yet.
_NO_SHAPE: Final = object()


class FrontDoor(Protocol):
    """What the urllib3 front door (``_urllib3._FrontDoor``) adds to a pool's urlopen."""

    #: (the pool's ``retries``, it as an AzRetry), once ``retries()`` made it.
    default_retry: Optional[Tuple[Any, AzRetry]]
    #: ``retries(pool, retries, redirect)``: the AzRetry this call uses.
    retries: Callable[..., AzRetry]
    #: ``urlopen(pool, attempt, call, args, response_kw)``:
    #: ``call(*args, **response_kw)`` behind the breaker (``args`` are
    #: urlopen's parameters up to ``body_pos``).
    urlopen: Callable[..., Any]


class _LegacyResponse(urllib3.response.HTTPResponse):
    """urllib3 1.26's response, through its pools' ``ResponseCls`` hook.

    1.26 reads a preloaded body here, outside the connection's
    ``getresponse``: a failure while reading it is judged by the connection
    that served it, like every other failure (urllib3 2.x reads it inside
    ``getresponse``).  For requests' ``stream=False`` body (the adapter's
    ``PreloadTimeout``) it reads it the way requests reads a body
    (``stream()``, as ``iter_content`` does), not with one ``read()``: on
    1.26 the latter raises for a body short of its Content-Length, which
    requests itself accepts, so preloading would fail where plain requests
    does not.  Any other preloaded body is read as urllib3 reads it.
    """

    @classmethod
    def from_httplib(cls, r: Any, **response_kw: Any) -> Any:
        like_requests = response_kw.pop(_LIKE_REQUESTS, False)
        conn = getattr(r, "azguard_conn", None)
        if conn is None or not response_kw.get("preload_content", True):
            return super().from_httplib(r, **response_kw)  # type: ignore[misc]
        # Watched by the in-flight watchdog and judged by the connection,
        # as urllib3 2.x's body read inside getresponse() is.
        read = cls._read_in_chunks if like_requests else cls._read_at_once
        return conn.azguard_read_body(read, r, response_kw)

    # The two reads take response_kw as a dict and expand it once, into
    # urllib3's own from_httplib, as urllib3 does: this runs per request.

    @classmethod
    def _read_at_once(cls, r: Any, response_kw: Dict[str, Any]) -> Any:
        return super().from_httplib(r, **response_kw)  # type: ignore[misc]

    @classmethod
    def _read_in_chunks(cls, r: Any, response_kw: Dict[str, Any]) -> Any:
        decode = response_kw.get("decode_content", True)
        response_kw["preload_content"] = False
        response = super().from_httplib(r, **response_kw)  # type: ignore[misc]
        response._body = b"".join(response.stream(_CHUNK, decode_content=decode))
        return response


# The size of the reads that preload a body on urllib3 1.26.
_CHUNK = 64 * 1024
#: The urlopen keyword (1.26 passes it on to ``from_httplib``) that asks for
#: a body read the way requests reads one.
_LIKE_REQUESTS: Final = "azguard_like_requests"


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
    headers: Any
    conn_kw: Dict[str, Any]
    retries: Any

    #: (config, whether its requests may be watched), see _azguard_facts.
    _azguard_watch_cache: Optional[Tuple[GuardConfig, bool]] = None
    #: Set on the front door's pools (``_urllib3``); the adapter's pools
    #: leave retries and the breaker to the adapter.
    _azguard_front: Optional[FrontDoor] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per thread: the attempt in progress (see _Attempt).
        self._azguard_attempt = _Attempt()
        _fork.track_pool(self)  # a forked child forgets this pool's connections

    def azguard_after_fork(self) -> None:
        """In a forked child: no attempt of the parent's threads is in progress."""
        self._azguard_attempt = _Attempt()

    def _new_conn(self) -> Any:
        conn = super()._new_conn()  # type: ignore[misc]
        config = self.azguard_config
        if isinstance(conn, GuardedConnection) and config is not None:
            scheme = getattr(self, "scheme", "http")
            host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6, as _origin_key
            proxy = self.proxy
            via_proxy = proxy is not None and bool(proxy.host)
            conn.azguard_bind(
                config,
                f"{scheme}://{host}:{self.port}",
                # The name resolved to reach the peer: the proxy's behind one.
                (proxy.host, proxy.port or 80) if via_proxy else (self.host, self.port or 80),
                via_proxy,
            )
        return conn

    def _get_conn(self, timeout: Optional[float] = None) -> Any:
        # The same signature on urllib3 1.26 and 2.x; spelled out because
        # packing **kwargs costs on every request.
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        if not isinstance(conn, GuardedConnection) or conn.azguard_config is None:
            return conn
        # Prepared here rather than in _make_request: overriding that hook
        # means repacking its dozen keyword arguments on every request.
        attempt = self._azguard_attempt
        facts = attempt.facts
        if facts is None:
            facts = _NO_REQUEST
        else:
            attempt.facts = None
        reason = conn.azguard_claim(*facts)
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
        super()._put_conn(conn)  # type: ignore[misc]

    def urlopen(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Any = None,
        retries: Any = None,
        redirect: bool = True,
        assert_same_host: bool = True,
        timeout: Any = _DEFAULT_TIMEOUT,
        pool_timeout: Optional[float] = None,
        release_conn: Optional[bool] = None,
        chunked: bool = False,
        body_pos: Any = None,
        **response_kw: Any,
    ) -> Any:
        # urllib3's parameters up to body_pos, the same on 1.26 and 2.x
        # (tests/test_canary.py checks), spelled out and passed on by
        # position: callers pass most of them by keyword, and collecting
        # them into **kwargs only to expand them again costs a dict per call.
        # (2.x's preload_content and decode_content travel in response_kw.)
        config = self.azguard_config
        front = self._azguard_front
        gated = False
        if config is not None:
            if front is not None and not isinstance(retries, AzRetry):
                default = front.default_retry
                if retries is None and default is not None and default[0] is self.retries:
                    retries = default[1]  # the pool's own Retry, wrapped once
                else:
                    retries = front.retries(self, retries, redirect)
            if timeout.__class__ is PreloadTimeout:
                response_kw["preload_content"] = True
                response_kw["decode_content"] = True
                if LEGACY_URLLIB3:  # whose pools read it in _LegacyResponse
                    response_kw[_LIKE_REQUESTS] = True
            # What _get_conn needs to prepare the connection this attempt
            # gets.  urllib3 calls urlopen again for each retry, with the new Retry.
            attempt = self._azguard_attempt
            if body is None and attempt.shape_retries is retries and attempt.shape_method == method:
                attempt.facts = attempt.shape_facts
            else:
                attempt.facts = self._azguard_facts(attempt, config, method, body, headers, retries)
            gated = front is not None and not attempt.depth and config.breaker
        args = (
            method,
            url,
            body,
            headers,
            retries,
            redirect,
            assert_same_host,
            timeout,
            pool_timeout,
            release_conn,
            chunked,
            body_pos,
        )
        if gated:
            return front.urlopen(  # type: ignore[union-attr]
                self,
                self._azguard_attempt,
                super().urlopen,  # type: ignore[misc]
                args,
                response_kw,
            )
        return super().urlopen(*args, **response_kw)  # type: ignore[misc]

    def _azguard_facts(
        self,
        attempt: _Attempt,
        config: GuardConfig,
        method: str,
        body: Any,
        headers: Any,
        retries: Any,
    ) -> Tuple[bool, bool, bool]:
        """(watched, idempotency key, body replayable) of a request."""
        body_ok = body is None or _body_replayable(body)
        if isinstance(retries, AzRetry):
            idempotent = retries.azguard_idempotent(method)
            mode = retries.azguard_mode
        else:
            idempotent = method.upper() in Retry.DEFAULT_ALLOWED_METHODS
            mode = config.retry_non_idempotent
        if headers is None:
            headers = self.headers
        # The key only matters for a method that is not idempotent anyway.
        keyed = not idempotent and bool(headers) and _has_idempotency_key(headers)
        # Only a request that may be replayed once written is watched: for
        # the others a verdict could only turn a slow answer into a lost one.
        # Whether the config allows watching at all is asked per pool and
        # config, not per request: hashing a GuardConfig costs.
        watched = False
        if body_ok and (idempotent or keyed or mode == "always"):
            cached = self._azguard_watch_cache
            if cached is None or cached[0] is not config:
                watchable = config.ack_timeout is not None and bool(
                    resting_options(config, HOST_CONSTANTS, HOST_KIND)
                )
                cached = self._azguard_watch_cache = (config, watchable)
            watched = cached[1]
        facts = (watched, keyed, body_ok)
        if body is None and idempotent:
            attempt.shape_retries = retries
            attempt.shape_method = method
            attempt.shape_facts = facts
        return facts


def _has_idempotency_key(headers: Any) -> bool:
    if isinstance(headers, CaseInsensitiveDict):
        # requests' own headers: two case-insensitive lookups, no scan.
        return any(headers.get(name) is not None for name in IDEMPOTENCY_HEADERS)
    return any(str(k).lower() in IDEMPOTENCY_HEADERS for k in headers)


# mypy compares GuardedPool.urlopen with RequestMethods.urlopen, the abstract
# base's, whose third positional differs; HTTPConnectionPool's is the real one.
class AzHTTPConnectionPool(GuardedPool, HTTPConnectionPool):  # type: ignore[misc]
    ConnectionCls = AzHTTPConnection
    if LEGACY_URLLIB3:
        ResponseCls = _LegacyResponse


class AzHTTPSConnectionPool(GuardedPool, HTTPSConnectionPool):  # type: ignore[misc]
    ConnectionCls = AzHTTPSConnection
    if LEGACY_URLLIB3:
        ResponseCls = _LegacyResponse


def _pool_classes() -> Dict[str, Type[HTTPConnectionPool]]:
    # A fresh dict per manager: urllib3's module-level dict is shared by
    # reference between every PoolManager in the process.
    return {"http": AzHTTPConnectionPool, "https": AzHTTPSConnectionPool}


class _GuardedManager:
    azguard_config: Optional[GuardConfig]
    #: Socket options for every pool's connections (the adapter's keepalive
    #: and TCP_USER_TIMEOUT options).
    azguard_socket_options: Optional[List[SocketOption]]

    def _azguard_init(self, azguard_config: GuardConfig, kwargs: Dict[str, Any]) -> None:
        self.azguard_config = azguard_config
        # Held here rather than left in connection_pool_kw, where urllib3
        # would copy, hash and compare them as part of the pool key on every
        # request (about 0.7 µs): they are the same for every pool anyway.
        self.azguard_socket_options = kwargs.pop("socket_options", None)
        _fork.track_manager(self)

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: Optional[Dict[str, Any]] = None
    ) -> Any:
        pool = super()._new_pool(scheme, host, port, request_context)  # type: ignore[misc]
        if isinstance(pool, GuardedPool):
            pool.azguard_config = self.azguard_config
        options = self.azguard_socket_options
        if options is not None and (
            request_context is None or "socket_options" not in request_context
        ):
            # Set after the pool's __init__, which on urllib3 1.26 gives
            # proxied pools an empty list (Nagle on) unless options are passed.
            pool.conn_kw["socket_options"] = options
        return pool


class AzPoolManager(_GuardedManager, PoolManager):
    """PoolManager whose pools are guarded."""

    def __init__(self, *args: Any, azguard_config: GuardConfig, **kwargs: Any) -> None:
        self._azguard_init(azguard_config, kwargs)
        super().__init__(*args, **kwargs)
        self.pool_classes_by_scheme = _pool_classes()


class AzProxyManager(_GuardedManager, ProxyManager):
    """ProxyManager whose pools (plain proxying and CONNECT tunnels) are guarded."""

    def __init__(self, *args: Any, azguard_config: GuardConfig, **kwargs: Any) -> None:
        self._azguard_init(azguard_config, kwargs)
        super().__init__(*args, **kwargs)
        self.pool_classes_by_scheme = _pool_classes()
