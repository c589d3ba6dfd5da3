"""AzGuardAdapter: the requests transport adapter, and ``mount()``.

The adapter subclasses ``requests.adapters.HTTPAdapter`` only at the hooks
requests documents for subclassing (``init_poolmanager``,
``proxy_manager_for``, ``send``) and keeps its contracts: every HTTPAdapter
argument is honoured, ``__attrs__`` lists the guard's attributes so a pickled
adapter comes back with its configuration, and ``**pool_kwargs`` pass through.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, Mapping, Optional, Tuple, Union

import requests
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.exceptions import DecodeError, ReadTimeoutError
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from ._breaker_gate import guarded_send
from ._breaker_registry import BreakerKey, BreakerLookup
from ._config import GuardConfig
from ._errors import BlackHoleError, ConfigError
from ._failure import failure_of
from ._keepalive import (
    HOST_CONSTANTS,
    HOST_KIND,
    SocketOption,
    socket_options,
    usable_options,
)
from ._policy import is_body_error, iter_chain
from ._pool import AzPoolManager, AzProxyManager, PreloadTimeout
from ._prometheus import enable_from_config as enable_metrics_from_config
from ._retry import AzRetry

__all__ = ["AzGuardAdapter", "Fallback", "mount"]

#: ``fallback(request, error) -> Response``.
Fallback = Callable[[requests.PreparedRequest, Exception], requests.Response]

_ProxyManagerArgs = Mapping[str, Any]


class AzGuardAdapter(HTTPAdapter):
    """A drop-in ``HTTPAdapter`` that guards pooled keep-alive connections.

    :param config: a :class:`GuardConfig`; ``None`` reads ``AZGUARD_*`` now.
    :param fallback: ``fallback(request, error) -> Response``, called instead
        of raising when a host's circuit breaker is open.
    :param breaker_key: ``key(request) -> str`` choosing the request's
        breaker; None means ``scheme://host:port`` of the target.
    :param kwargs: any ``HTTPAdapter`` argument (``pool_connections``,
        ``pool_maxsize``, ``max_retries``, ``pool_block``).
    """

    # HTTPAdapter already owns the attribute name ``config`` (a dict), so the
    # guard's settings live under ``azguard_config``.
    __attrs__ = [
        *HTTPAdapter.__attrs__,
        "azguard_config",
        "azguard_fallback",
        "azguard_breaker_key",
    ]

    azguard_config: GuardConfig
    azguard_fallback: Optional[Fallback]
    #: ``key(request) -> str`` choosing the request's breaker; None means
    #: ``scheme://host:port`` of the target.  Set it to scope breakers finer
    #: (e.g. host plus first path segment).
    azguard_breaker_key: Optional[BreakerKey] = None
    # Built on first use from the two attributes above (not pickled).
    _azguard_lookup: Optional[BreakerLookup] = None

    def __init__(
        self,
        config: Optional[GuardConfig] = None,
        *,
        fallback: Optional[Fallback] = None,
        breaker_key: Optional[BreakerKey] = None,
        **kwargs: Any,
    ) -> None:
        if config is None:
            config = GuardConfig.from_env()
        if not isinstance(config, GuardConfig):
            raise ConfigError("config", config, "a requests_azguard.GuardConfig or None")
        if fallback is not None and not callable(fallback):
            raise ConfigError(
                "fallback", fallback, "a callable fallback(request, error) -> Response, or None"
            )
        if breaker_key is not None and not callable(breaker_key):
            raise ConfigError("breaker_key", breaker_key, "a callable key(request) -> str, or None")
        # Set before super().__init__(), which calls init_poolmanager().
        self.azguard_config = config
        self.azguard_fallback = fallback
        self.azguard_breaker_key = breaker_key
        enable_metrics_from_config(config)  # once per process; no-op without a port
        if "max_retries" not in kwargs:
            kwargs["max_retries"] = Retry.from_int(config.retries)
        super().__init__(**kwargs)
        # Whatever the caller gave (an int, a Retry), keep every setting and
        # add the guard's replay rules: still urllib3's one retry loop.
        self.max_retries = AzRetry.wrap(self.max_retries, config.retry_non_idempotent)

    #: How ``repr()`` names the class (``install()``'s subclass says so).
    _azguard_repr_name = "AzGuardAdapter"

    def __repr__(self) -> str:
        # What a user printing a session's adapters needs: which settings
        # differ from the defaults (the config lives in ``azguard_config``;
        # ``config`` is requests' own dict).
        config = getattr(self, "azguard_config", None)
        parts = [] if config is None else config_changes(config)
        for name in ("azguard_fallback", "azguard_breaker_key"):
            value = getattr(self, name, None)
            if value is not None:
                label = getattr(value, "__qualname__", None) or type(value).__qualname__
                parts.append(f"{name[len('azguard_') :]}={label}")
        return f"<{self._azguard_repr_name} {', '.join(parts) or 'default config'}>"

    # -- requests' documented hooks ----------------------------------------

    def azguard_socket_options(self) -> List[SocketOption]:
        """The options every new socket of this adapter gets (TCP_NODELAY kept)."""
        # Only the guard's own list is probed: options a caller passes
        # through pool_kwargs fail as they would without the guard.
        return usable_options(socket_options(self.azguard_config, HOST_CONSTANTS, HOST_KIND))

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        # Saved first, exactly as HTTPAdapter does, so pickling keeps them.
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        # urllib3 2.x ignores a subclass's default_socket_options: pass them.
        pool_kwargs.setdefault("socket_options", self.azguard_socket_options())
        self.poolmanager = AzPoolManager(
            num_pools=connections,
            maxsize=maxsize,
            block=block,
            azguard_config=self.azguard_config,
            **pool_kwargs,
        )

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # requests builds proxy managers without the pool kwargs given to
        # init_poolmanager, which is how keepalive options get lost behind a
        # proxy; they are passed here for HTTP proxies, CONNECT tunnels and SOCKS.
        if proxy in self.proxy_manager:
            return self.proxy_manager[proxy]
        proxy_kwargs.setdefault("socket_options", self.azguard_socket_options())
        if proxy.lower().startswith("socks"):
            return super().proxy_manager_for(proxy, **proxy_kwargs)
        manager = AzProxyManager(
            proxy,
            proxy_headers=self.proxy_headers(proxy),
            num_pools=self._pool_connections,
            maxsize=self._pool_maxsize,
            block=self._pool_block,
            azguard_config=self.azguard_config,
            **proxy_kwargs,
        )
        self.proxy_manager[proxy] = manager
        return manager

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Union[float, Tuple[Any, Any], Any, None] = None,
        verify: Union[bool, str] = True,
        cert: Union[str, Tuple[str, str], None] = None,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> requests.Response:
        config = self.azguard_config
        if timeout is None and config.default_timeout is not None:
            # Legacy callers often pass no timeout and can hang forever; an
            # explicit timeout from the caller always wins.
            timeout = config.default_timeout
        if not config.breaker:
            return self._azguard_transport(request, stream, timeout, verify, cert, proxies)
        lookup = self._azguard_lookup
        if (
            lookup is None
            or lookup.config is not config
            or lookup.key is not self.azguard_breaker_key
        ):
            lookup = self._azguard_lookup = BreakerLookup(config, self.azguard_breaker_key)
        # The breaker checks its state before and records the final outcome
        # after the transport call (retries included, so they count once); no
        # lock is held while the request is on the wire.
        proxy = select_proxy(request.url or "", proxies) if proxies else None
        return guarded_send(
            lookup(request),
            request,
            config,
            self._azguard_transport,
            (request, stream, timeout, verify, cert, proxies),
            self.azguard_fallback,
            self,
            lookup.proxy(proxy) if proxy else None,
        )

    def _azguard_transport(
        self,
        request: requests.PreparedRequest,
        stream: bool,
        timeout: Any,
        verify: Union[bool, str],
        cert: Union[str, Tuple[str, str], None],
        proxies: Optional[Mapping[str, str]],
    ) -> requests.Response:
        """One request through urllib3, including its transparent retries."""
        try:
            if stream:
                return super().send(
                    request, stream=True, timeout=timeout, verify=verify, cert=cert, proxies=proxies
                )
            response = super().send(
                request,
                stream=False,
                timeout=_preloading(timeout),
                verify=verify,
                cert=cert,
                proxies=proxies,
            )
        except requests.RequestException as exc:
            mapped = _as_guard_error(exc, request)
            if mapped is exc:
                raise
            raise mapped from exc
        except DecodeError as exc:
            # What requests raises when it decodes a body itself.
            raise requests.exceptions.ContentDecodingError(exc, request=request) from exc
        # urllib3 read (and decoded) the body inside urlopen; hand it to
        # requests exactly as Response.content would have read it.
        data = response.raw.data
        response._content = data if data is not None else b""
        response._content_consumed = True  # type: ignore[attr-defined]
        return response


def _preloading(timeout: Any) -> Any:
    """``timeout`` as the ``PreloadTimeout`` that tells the pool to read the
    body inside urlopen, built the way ``HTTPAdapter.send`` builds its own
    (so that a bad value fails there, and in the same way)."""
    if isinstance(timeout, tuple):
        try:
            connect, read = timeout
            return PreloadTimeout(connect=connect, read=read)
        except ValueError:
            return timeout  # requests raises its own ValueError for it
    if isinstance(timeout, Timeout):
        return PreloadTimeout(connect=timeout._connect, read=timeout._read, total=timeout.total)
    return PreloadTimeout(connect=timeout, read=timeout)


def _as_guard_error(exc: requests.RequestException, request: requests.PreparedRequest) -> Exception:
    """The error to surface for a failure the retries did not recover.

    The body of a ``stream=False`` request is read inside send() so that
    urllib3 can retry it; a failure reading it that is not retried surfaces
    exactly as requests reports it when it reads the body itself
    (``Response.iter_content``): ``ChunkedEncodingError``,
    ``ContentDecodingError``, ``ConnectionError`` for a stall.  Otherwise a
    flow judged black-holed is ``BlackHoleError`` (both a ``ConnectionError``
    and a ``Timeout``, like requests' ``ConnectTimeout``, so either
    ``except`` still catches it).
    """
    body_error = next((e for e in iter_chain(exc) if is_body_error(e)), None)
    if body_error is not None:
        if isinstance(body_error, DecodeError):
            return requests.exceptions.ContentDecodingError(body_error, request=request)
        if isinstance(body_error, ReadTimeoutError):
            return requests.exceptions.ConnectionError(body_error, request=request)
        return requests.exceptions.ChunkedEncodingError(body_error, request=request)
    failure = failure_of(exc)
    if failure is not None and failure.dead_flow == "blackhole":
        return BlackHoleError(
            f"black-holed flow: the peer's TCP stopped answering ({exc})", request=request
        )
    return exc


def config_changes(config: GuardConfig) -> List[str]:
    """``name=value`` for every field of ``config`` that differs from its default
    (the Redis URL with its password hidden)."""
    out = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value == field.default:
            continue
        if field.name == "redis_url":
            out.append(f"redis_url={config.redis_url_redacted!r}")
        else:
            out.append(f"{field.name}={value!r}")
    return out


def mount(
    session: requests.Session,
    config: Optional[GuardConfig] = None,
    **adapter_kwargs: Any,
) -> requests.Session:
    """Mount one :class:`AzGuardAdapter` on ``http://`` and ``https://``."""
    if not isinstance(session, requests.Session):
        raise ConfigError("session", session, "a requests.Session")
    adapter = AzGuardAdapter(config, **adapter_kwargs)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
