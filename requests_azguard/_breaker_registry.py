"""The process-wide registry of circuit breakers, and how a request finds its own.

Where the state lives: module-level ``requests.get`` builds a new Session and
adapter per call and urllib3 evicts pools, so breakers hang off a
process-wide :class:`BreakerRegistry`, keyed by the breaker settings and by the
key of the *target* (``scheme://host:port``); a proxy has a breaker of its own
under its own key.  Each failure counts against whom its evidence blames
(``_failure``): the host, the proxy, or nobody for a dead flow.

Memory bound: at most ``max_hosts`` breakers.  A new key past the cap evicts
the least recently used *closed* breakers (an eighth of the cap at once, so
the scan is amortised).  Open and half-open breakers are kept: forgetting one
would send traffic to a host known to be down.  Only if every breaker is open
is the one whose trial is due soonest dropped, with a warning log and the
``evicted_open`` counter, so it is never silent.

Breakers with a ``redis_url`` share one :class:`~._breaker_redis.RedisLink`
per URL (``_breaker_sync`` keeps each in step with Redis).
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Final, List, Optional, Tuple
from urllib.parse import urlsplit

import requests

from ._breaker import BreakerSettings, HostBreaker
from ._errors import ConfigError

if TYPE_CHECKING:
    from ._breaker_redis import RedisBreakerStorage, RedisLink
    from ._config import GuardConfig

__all__ = [
    "DEFAULT_MAX_HOSTS",
    "DEFAULT_SYNC_INTERVAL",
    "BreakerKey",
    "BreakerLookup",
    "BreakerRegistry",
    "breaker_key",
    "proxy_breaker_key",
    "registry",
    "reset_breakers",
]

_log = logging.getLogger("requests_azguard.breaker")

DEFAULT_MAX_HOSTS: Final = 1024
DEFAULT_HALF_OPEN_TRIALS: Final = 1
DEFAULT_SYNC_INTERVAL: Final = 0.5
DEFAULT_REDIS_SOCKET_TIMEOUT: Final = 0.25
DEFAULT_REATTACH_INTERVAL: Final = 2.0

#: ``key(request) -> str``: which breaker guards a request.
BreakerKey = Callable[[requests.PreparedRequest], str]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# scheme://authority: everything before the path, query or fragment.
_ORIGIN: Final = re.compile(r"(?:[^:/?#]+:)?(?://)?[^/?#]*")


@functools.lru_cache(maxsize=1024)
def _origin_key(origin: str) -> str:
    parts = urlsplit(origin)
    scheme = (parts.scheme or "http").lower()
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}" if port is not None else f"{scheme}://{host}"


def breaker_key(request: requests.PreparedRequest) -> str:
    """The default key: ``scheme://host:port`` of the request's target.

    Lower-cased, default port filled in, user info dropped.  Behind a proxy
    ``request.url`` is still the target's URL, so the target is guarded.
    """
    match = _ORIGIN.match(request.url or "")
    return _origin_key(match.group(0) if match else "")


def proxy_breaker_key(proxy: str) -> str:
    """The key of a proxy's own breaker: ``scheme://host:port`` of the proxy
    URL (``http://`` when the URL names no scheme, as requests assumes)."""
    if "://" not in proxy:
        proxy = "http://" + proxy
    match = _ORIGIN.match(proxy)
    return _origin_key(match.group(0) if match else proxy)


class BreakerRegistry:
    """Every breaker of this process, created lazily, bounded in number."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        half_open_trials: int = DEFAULT_HALF_OPEN_TRIALS,
        sync_interval: float = DEFAULT_SYNC_INTERVAL,
        redis_socket_timeout: float = DEFAULT_REDIS_SOCKET_TIMEOUT,
        reattach_interval: float = DEFAULT_REATTACH_INTERVAL,
    ) -> None:
        if not callable(clock):
            raise ConfigError("clock", clock, "a callable returning seconds (like time.time)")
        for name, value, minimum in (
            ("max_hosts", max_hosts, 1),
            ("half_open_trials", half_open_trials, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(name, value, f"a whole number >= {minimum}")
        for name, seconds in (
            ("sync_interval", sync_interval),
            ("redis_socket_timeout", redis_socket_timeout),
            ("reattach_interval", reattach_interval),
        ):
            if (
                not isinstance(seconds, (int, float))
                or isinstance(seconds, bool)
                or not math.isfinite(seconds)
                or seconds < 0
                or (seconds == 0 and name == "redis_socket_timeout")
            ):
                raise ConfigError(name, seconds, "a finite number of seconds >= 0")
        self.clock = clock
        self.max_hosts = max_hosts
        self.half_open_trials = half_open_trials
        self.sync_interval = float(sync_interval)
        self.redis_socket_timeout = float(redis_socket_timeout)
        self.reattach_interval = float(reattach_interval)
        self._lock = threading.Lock()
        self._breakers: Dict[Tuple[BreakerSettings, str], HostBreaker] = {}
        self._links: Dict[str, RedisLink] = {}
        self.evicted = 0
        self.evicted_open = 0

    def __repr__(self) -> str:
        return f"<BreakerRegistry {len(self._breakers)} breakers>"

    def __len__(self) -> int:
        return len(self._breakers)

    def breakers(self) -> List[HostBreaker]:
        with self._lock:
            return list(self._breakers.values())

    def links(self) -> List[RedisLink]:
        with self._lock:
            return list(self._links.values())

    def get(self, settings: BreakerSettings, key: str) -> HostBreaker:
        breaker = self._breakers.get((settings, key))
        if breaker is not None:
            return breaker
        return self._create(settings, key)

    def _create(self, settings: BreakerSettings, key: str) -> HostBreaker:
        with self._lock:
            breaker = self._breakers.get((settings, key))
            if breaker is not None:
                return breaker
            if len(self._breakers) >= self.max_hosts:
                self._evict()
            shared = None
            if settings.redis_url is not None:
                shared = self._shared(settings, key)
            breaker = HostBreaker(
                key,
                settings,
                half_open_trials=self.half_open_trials,
                sync_interval=self.sync_interval,
                shared=shared,
            )
            breaker.clock = self.clock
            breaker.last_used = self.clock()
            self._breakers[(settings, key)] = breaker
            return breaker

    def _shared(self, settings: BreakerSettings, key: str) -> RedisBreakerStorage:
        from ._breaker_redis import RedisBreakerStorage, RedisLink
        from ._config import _redact_url

        url = settings.redis_url
        assert url is not None
        link = self._links.get(url)
        if link is None:
            link = RedisLink(
                url,
                _redact_url(url),
                socket_timeout=self.redis_socket_timeout,
                reattach_interval=self.reattach_interval,
            )
            self._links[url] = link
        # Long enough to outlive any open period, short enough that keys of
        # hosts nobody calls any more leave Redis on their own.
        ttl = int(max(3600.0, 4 * settings.reset_timeout))
        return RedisBreakerStorage(link, key, ttl)

    def _evict(self) -> None:
        """Make room (called with the registry lock held)."""
        closed = sorted((b.last_used, k) for k, b in self._breakers.items() if b.evictable)
        batch = max(1, self.max_hosts // 8)
        for _, k in closed[:batch]:
            self._breakers.pop(k).retired = True
            self.evicted += 1
        if closed:
            return
        k, victim = min(self._breakers.items(), key=lambda item: item[1]._retry_at)
        del self._breakers[k]
        victim.retired = True
        self.evicted += 1
        self.evicted_open += 1
        _log.warning(
            "circuit breaker registry full (%d hosts, all open): dropped the open breaker "
            "of %s, whose next trial was due soonest; raise max_hosts if this repeats",
            self.max_hosts,
            victim.key,
        )

    def close(self) -> None:
        with self._lock:
            links = list(self._links.values())
            self._links.clear()
            self.abandon()
        for link in links:
            link.close()

    def abandon(self) -> None:
        """Retire every breaker and forget it, without the lock: also called
        in a forked child, where a thread of the parent may have held it."""
        breakers = list(self._breakers.values())
        self._breakers.clear()
        for breaker in breakers:
            breaker.retired = True


_registry: Optional[BreakerRegistry] = None
_registry_lock = threading.Lock()


def registry() -> BreakerRegistry:
    """The process-wide registry (created on first use)."""
    global _registry
    current = _registry
    if current is None:
        with _registry_lock:
            if _registry is None:
                _registry = BreakerRegistry()
            current = _registry
    return current


def reset_breakers(**options: Any) -> BreakerRegistry:
    """Forget every breaker; ``options`` configure the new registry.

    Meant for tests and for programs that want other limits: ``clock``,
    ``max_hosts``, ``half_open_trials``, ``sync_interval``,
    ``redis_socket_timeout``, ``reattach_interval``.
    """
    global _registry
    fresh = BreakerRegistry(**options)
    with _registry_lock:
        old, _registry = _registry, fresh
    if old is not None:
        old.close()
    return fresh


class BreakerLookup:
    """``request -> HostBreaker`` for one adapter.

    Finding a request's breaker means parsing its URL for the key and hashing
    the settings and key into the registry: about 0.9 µs of CPU on every
    request, a fifth of the guard's whole cost in a busy loop.  With the
    default key the answer depends only on the URL, as long as the breaker
    found stays in the registry (one that leaves it, evicted or reset, is
    ``retired``), so it is memoised per URL; a custom key function may look
    at anything in the request and is asked every time.
    """

    #: URLs remembered; past that the memo starts again (URLs with unique
    #: query strings would otherwise grow it without bound).
    MAX_URLS: Final = 256

    __slots__ = ("_by_url", "_settings", "config", "key")

    def __init__(self, config: GuardConfig, key: Optional[BreakerKey] = None) -> None:
        self.config = config
        self.key = key
        self._settings = BreakerSettings.of(config)
        self._by_url: Dict[str, HostBreaker] = {}

    def __call__(self, request: requests.PreparedRequest) -> HostBreaker:
        if self.key is None:
            found = self._by_url.get(request.url)  # type: ignore[arg-type]
            if found is not None and not found.retired:
                return found
        return self._look_up(request)

    def _look_up(self, request: requests.PreparedRequest) -> HostBreaker:
        reg = _registry if _registry is not None else registry()
        if self.key is not None:
            name = self.key(request)
            if not isinstance(name, str):
                raise ConfigError("breaker key", name, "a str returned by the breaker key function")
            return reg.get(self._settings, name)
        if len(self._by_url) >= self.MAX_URLS:
            # Replaced, not cleared: another thread may be reading the old one.
            self._by_url = {}
        breaker = reg.get(self._settings, breaker_key(request))
        self._by_url[request.url or ""] = breaker
        return breaker

    def proxy(self, proxy_url: str) -> HostBreaker:
        """The breaker of the proxy at ``proxy_url``."""
        reg = _registry if _registry is not None else registry()
        return reg.get(self._settings, proxy_breaker_key(proxy_url))
