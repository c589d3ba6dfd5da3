"""The urllib3-level front door: guarded ``PoolManager``, ``ProxyManager``, ``proxy_from_url``.

For programs (and SDKs) that talk to urllib3 directly.  The semantics are the
adapter's, one layer down:

* keepalive options at connect, validation before reuse, the in-flight
  watchdog and condemnation come from the pool and connection classes of
  ``_pool``/``_connection``;
* retries stay urllib3's one loop: whatever ``retries`` a call (or the pool)
  carries is wrapped with :meth:`AzRetry.wrap`, keeping every setting, so a
  caller's ``Retry(False)`` still means no replay (botocore retries in its own
  layer) while the guard still judges and condemns the failed flow;
* the per-host breaker gates each pool's ``urlopen`` (its outermost call per
  thread: urllib3's own retries and same-host redirects re-enter it and count
  once), with the adapter's evidence rules, by calling the same functions.

A caller's own pool classes are kept: when a manager's ``pool_classes_by_scheme``
is assigned (botocore assigns its ``AWSHTTP(S)ConnectionPool`` right after
building the manager), guarded subclasses are derived that put the guard
between the caller's overrides and urllib3's (C3 order), so the caller's
behaviour (botocore's ``Expect: 100-continue`` handling) is kept.  urllib3's
module-level ``pool_classes_by_scheme`` is never touched.

A caller's socket options are kept too: the guard's keepalive options are
appended, except where the caller already set the same option (the caller's
value wins).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.util.retry import Retry

from ._breaker import BreakerSettings, HostBreaker
from ._breaker_gate import fresh_connection, record_exception
from ._breaker_registry import _origin_key, registry
from ._config import GuardConfig
from ._connection import AzHTTPConnection, AzHTTPSConnection, GuardedConnection
from ._errors import CircuitOpenError, ConfigError
from ._keepalive import HOST_CONSTANTS, HOST_KIND, SocketOption, keepalive_options
from ._pool import AzHTTPConnectionPool, AzHTTPSConnectionPool, AzPoolManager, AzProxyManager
from ._prometheus import enable_from_config as enable_metrics_from_config
from ._retry import AzRetry

__all__ = [
    "PoolCircuitOpenError",
    "PoolManager",
    "ProxyManager",
    "guarded_pool_class",
    "merge_socket_options",
    "proxy_from_url",
]


class PoolCircuitOpenError(CircuitOpenError, Urllib3HTTPError):
    """The breaker of a host is open (urllib3 level): both a
    :class:`CircuitOpenError` and a ``urllib3.exceptions.HTTPError``, so code
    catching urllib3's base class (SDKs do) still catches it."""


def merge_socket_options(
    caller: Optional[List[SocketOption]], guard: List[SocketOption]
) -> List[SocketOption]:
    """The caller's options, then the guard's for every option the caller left unset."""
    base = list(caller or ())
    taken = {(level, name) for level, name, _ in base}
    return base + [opt for opt in guard if (opt[0], opt[1]) not in taken]


def _guard_options(config: GuardConfig, kwargs: Dict[str, Any]) -> GuardConfig:
    """Put the merged socket options in ``kwargs`` (urllib3's default when
    absent) and return the config the guard then works with: where the caller
    set a keepalive option itself, its value is taken into the config, so the
    in-flight watchdog restores the caller's value after a request, not the
    guard's."""
    if "socket_options" in kwargs:
        caller = kwargs["socket_options"]  # None or [] means: none of urllib3's defaults
    else:
        caller = list(HTTPConnection.default_socket_options)
    config = _adopt_callers(config, caller or [])
    kwargs["socket_options"] = merge_socket_options(
        caller, keepalive_options(config, HOST_CONSTANTS, HOST_KIND)
    )
    return config


def _adopt_callers(config: GuardConfig, options: List[SocketOption]) -> GuardConfig:
    c = HOST_CONSTANTS
    idle = c.TCP_KEEPIDLE if HOST_KIND == "linux" else c.TCP_KEEPALIVE
    fields = {
        (c.IPPROTO_TCP, idle): ("keepalive_idle", float),
        (c.IPPROTO_TCP, c.TCP_KEEPINTVL): ("keepalive_interval", float),
        (c.IPPROTO_TCP, c.TCP_KEEPCNT): ("keepalive_count", int),
        (c.IPPROTO_TCP, c.TCP_USER_TIMEOUT): ("user_timeout", None),
        (c.SOL_SOCKET, c.SO_KEEPALIVE): ("keepalive", bool),
    }
    changes: Dict[str, Any] = {}
    for level, name, value in options:
        found = fields.get((level, name))
        if found is None or not isinstance(value, int):
            continue
        field, kind = found
        if kind is None:  # milliseconds; 0 is the kernel's default (none)
            changes[field] = value / 1000 if value > 0 else None
        else:
            changes[field] = kind(value)
    if not changes:
        return config
    try:
        return config.replace(**changes)
    except ConfigError:
        return config  # values the guard would not pick: the caller's still win on the socket


# -- the front door: Retry wrapping and the breaker gate --------------------------


class _FrontDoor:
    """One front-door pool's part of urlopen (``_pool.FrontDoor``): the
    caller's retries as an AzRetry, and the per-host breaker around the
    outermost urlopen of each thread (urllib3's own retries and same-host
    redirects re-enter it and count once)."""

    __slots__ = ("breaker", "default_retry")

    def __init__(self) -> None:
        #: This pool's own origin's breaker, while the registry holds it.
        self.breaker: Optional[HostBreaker] = None
        #: (the pool's retries, that Retry wrapped as an AzRetry).
        self.default_retry: Optional[Tuple[Any, AzRetry]] = None

    def retries(self, pool: Any, retries: Any, redirect: bool) -> AzRetry:
        mode = pool.azguard_config.retry_non_idempotent
        if retries is None and isinstance(pool.retries, Retry):
            # The pool's own Retry (PoolManager.urlopen passes none): wrapped
            # once, not on every request.
            cached = self.default_retry
            if cached is None or cached[0] is not pool.retries:
                cached = self.default_retry = (pool.retries, AzRetry.wrap(pool.retries, mode))
            return cached[1]
        if not isinstance(retries, Retry):
            # What urllib3's own urlopen does with None, an int or a bool.
            retries = Retry.from_int(retries, redirect=redirect, default=pool.retries)
        return AzRetry.wrap(retries, mode)

    def _breaker_for(self, pool: Any, config: GuardConfig, url: str) -> HostBreaker:
        reg = registry()
        if url[:1] != "/" and "://" in url:
            # Absolute form (plain HTTP through a proxy): the target is guarded.
            end = url.find("/", url.index("://") + 3)
            return reg.get(BreakerSettings.of(config), _origin_key(url if end < 0 else url[:end]))
        # This pool's origin (the path is not "/"-relative, or the breaker
        # remembered left the registry): looked up and remembered again.
        breaker = reg.get(
            BreakerSettings.of(config), _origin_key(f"{pool.scheme}://{pool.host}:{pool.port}")
        )
        self.breaker = breaker
        return breaker

    def urlopen(
        self,
        pool: Any,
        attempt: Any,
        call: Callable[..., Any],
        args: Tuple[Any, ...],
        response_kw: Dict[str, Any],
    ) -> Any:
        config: GuardConfig = pool.azguard_config
        url: str = args[1]
        breaker = self.breaker
        if breaker is None or breaker.retired or url[:1] != "/":
            breaker = self._breaker_for(pool, config, url)
        clock = breaker.clock
        try:
            ticket = breaker.admit(clock())
        except CircuitOpenError as err:
            raise PoolCircuitOpenError(err.host, err.retry_at) from None
        attempt.depth = 1
        try:
            response = call(*args, **response_kw)
        except BaseException as exc:
            record_exception(breaker, ticket, exc, clock())
            raise
        finally:
            attempt.depth = 0
        if response.status in config.breaker_statuses:
            breaker.record_failure(ticket, clock())
        elif ticket or not breaker.calm:
            # As the adapter's gate: a success on a fresh connection closes a
            # breaker that is not closed (asked only then).
            breaker.record_success(
                ticket, clock(), not breaker.closed and fresh_connection(response)
            )
        return response


class _FrontDoorPool:
    """Mixin of the front door's pools (see ``_FrontDoor``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._azguard_front = _FrontDoor()


# mypy compares the mixins' urlopen with RequestMethods.urlopen (see _pool).
class GuardedHTTPConnectionPool(_FrontDoorPool, AzHTTPConnectionPool):  # type: ignore[misc]
    """The front door's HTTP pool."""


class GuardedHTTPSConnectionPool(_FrontDoorPool, AzHTTPSConnectionPool):  # type: ignore[misc]
    """The front door's HTTPS pool."""


_derived_lock = threading.Lock()
_derived: Dict[type, type] = {}


def _guarded_connection_class(cls: type) -> type:
    if issubclass(cls, GuardedConnection) or not issubclass(cls, HTTPConnection):
        return cls
    guard = AzHTTPSConnection if issubclass(cls, HTTPSConnection) else AzHTTPConnection
    if issubclass(guard, cls):
        return guard  # urllib3's own class: the guard's subclass of it
    # (cls, guard): the caller's overrides first, then the guard, then urllib3.
    return type(f"Guarded{cls.__name__}", (cls, guard), {"__module__": __name__})


def guarded_pool_class(cls: Type[Any]) -> Type[Any]:
    """A guarded subclass of the connection pool class ``cls`` (cached).

    ``cls`` itself when it is already a front-door pool or not an urllib3 pool.
    """
    if issubclass(cls, _FrontDoorPool) or not issubclass(cls, HTTPConnectionPool):
        return cls
    with _derived_lock:
        found = _derived.get(cls)
        if found is None:
            https = issubclass(cls, HTTPSConnectionPool)
            base = GuardedHTTPSConnectionPool if https else GuardedHTTPConnectionPool
            if issubclass(base, cls):
                found = base  # urllib3's own class, or the adapter's
            else:
                found = type(
                    f"Guarded{cls.__name__}",
                    (cls, base),
                    {
                        "__module__": __name__,
                        "ConnectionCls": _guarded_connection_class(cls.ConnectionCls),
                    },
                )
            _derived[cls] = found
    return found


class _FrontDoorManager:
    """What both front-door managers share: config, options, pool classes."""

    _azguard_pool_classes: Dict[str, Type[Any]]

    @property
    def pool_classes_by_scheme(self) -> Dict[str, Type[Any]]:
        return self._azguard_pool_classes

    @pool_classes_by_scheme.setter
    def pool_classes_by_scheme(self, classes: Mapping[str, Type[Any]]) -> None:
        # A fresh dict: urllib3's module-level one is shared by every manager.
        self._azguard_pool_classes = {k: guarded_pool_class(v) for k, v in classes.items()}


def _front_config(config: Optional[GuardConfig]) -> GuardConfig:
    if config is None:
        from ._installed import installed_config

        config = installed_config() or GuardConfig.from_env()
    if not isinstance(config, GuardConfig):
        raise ConfigError("config", config, "a requests_azguard.GuardConfig or None")
    enable_metrics_from_config(config)  # once per process; no-op without a port
    return config


class PoolManager(_FrontDoorManager, AzPoolManager):
    """A guarded ``urllib3.PoolManager``.

    :param config: a :class:`GuardConfig`; ``None`` takes the config of an
        active ``install()``, else reads ``AZGUARD_*`` now.
    :param kwargs: any ``urllib3.PoolManager`` argument (``num_pools``,
        ``headers``, ``retries``, ``socket_options``, ``maxsize``, TLS
        settings...).  ``socket_options`` are kept and the guard's keepalive
        options added where the caller left them unset.
    """

    def __init__(
        self,
        num_pools: int = 10,
        headers: Any = None,
        *,
        config: Optional[GuardConfig] = None,
        **kwargs: Any,
    ) -> None:
        # config is keyword-only: the positionals stay urllib3's, so this
        # class can stand wherever urllib3.PoolManager is called.
        config = _guard_options(_front_config(config), kwargs)
        super().__init__(num_pools, headers, azguard_config=config, **kwargs)
        self.pool_classes_by_scheme = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}


class ProxyManager(_FrontDoorManager, AzProxyManager):
    """A guarded ``urllib3.ProxyManager`` (plain proxying and CONNECT tunnels);
    ``config`` as for :class:`PoolManager`."""

    def __init__(
        self, proxy_url: str, *args: Any, config: Optional[GuardConfig] = None, **kwargs: Any
    ) -> None:
        config = _guard_options(_front_config(config), kwargs)
        super().__init__(proxy_url, *args, azguard_config=config, **kwargs)
        self.pool_classes_by_scheme = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}


def proxy_from_url(url: str, **kwargs: Any) -> ProxyManager:
    """``urllib3.proxy_from_url`` returning a guarded :class:`ProxyManager`."""
    return ProxyManager(proxy_url=url, **kwargs)


#: The urllib3 names the front door stands in for (used by the SDK rebinding).
REPLACEMENTS: Dict[str, Any] = {
    "PoolManager": PoolManager,
    "ProxyManager": ProxyManager,
    "proxy_from_url": proxy_from_url,
}
