"""Per-host circuit breakers: a process-wide registry and the gate around ``send()``.

Why the state machine is driven here and not by ``pybreaker.CircuitBreaker``:
pybreaker 1.4.1 runs the wrapped call inside ``with self._lock`` (an RLock
per breaker), so ``call()``/``calling()`` around a request serialise every
request to a host (four threads against a 20 ms server get 0.26x the
throughput).  Here the state is *checked* before the request and the outcome
*recorded* after it; the per-breaker lock only guards a few field updates and
is never held across network I/O (neither the request nor a Redis round trip).
The state lives in pybreaker's ``CircuitMemoryStorage`` under pybreaker's
state names, so it reads the same as a pybreaker breaker's.

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

Fleet-wide state (``redis_url``): each breaker mirrors its Redis hash, read
at most once per ``sync_interval`` (default 0.5 s) on the request path, so the
hot path is a dict lookup and a state check; the price is that a trip in
another process is seen up to ``sync_interval`` late.  Outcomes that change
state are written through at once.  With Redis unreachable the local state
machine keeps working (see ``_breaker_redis.RedisLink``).

Clock: ``time.time`` by default, injectable.  Wall-clock time because
``opened_at`` is shared between machines and ``CircuitOpenError.retry_at`` is
documented as ``time.time()``.  A clock that jumps back cannot keep a breaker
open longer than one ``reset_timeout`` past ``now``.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
import time
from datetime import datetime, timezone
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Final,
    List,
    NamedTuple,
    Optional,
    Tuple,
)
from urllib.parse import urlsplit

import requests
from urllib3 import exceptions as u3

from ._errors import CircuitOpenError, ConfigError, ProxyCircuitOpenError
from ._failure import failure_of, unattached
from ._instrument import hooks
from ._policy import HOST, NOBODY, PROXY

if TYPE_CHECKING:
    from ._breaker_redis import RedisBreakerStorage, RedisLink, Snapshot
    from ._config import GuardConfig

__all__ = [
    "CLOSED",
    "DEFAULT_MAX_HOSTS",
    "DEFAULT_SYNC_INTERVAL",
    "HALF_OPEN",
    "OPEN",
    "BreakerKey",
    "BreakerLookup",
    "BreakerRegistry",
    "BreakerSettings",
    "HostBreaker",
    "breaker_key",
    "guarded_send",
    "proxy_breaker_key",
    "registry",
    "reset_breakers",
]

_log = logging.getLogger("requests_azguard.breaker")

# pybreaker's state names (pybreaker.STATE_*), spelled out so that importing
# this module does not import pybreaker, which imports redis (~0.1 s).
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"

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


class BreakerSettings(NamedTuple):
    """The part of a ``GuardConfig`` a breaker depends on (a registry key)."""

    fail_max: int
    reset_timeout: float
    timeout_fail_fast: int
    redis_url: Optional[str]

    @classmethod
    def of(cls, config: GuardConfig) -> BreakerSettings:
        return cls(
            config.breaker_fail_max,
            config.breaker_reset_timeout,
            config.timeout_fail_fast,
            config.redis_url,
        )

    def __repr__(self) -> str:
        from ._config import _redact_url

        redis = None if self.redis_url is None else _redact_url(self.redis_url)
        return (
            f"BreakerSettings(fail_max={self.fail_max}, reset_timeout={self.reset_timeout}, "
            f"timeout_fail_fast={self.timeout_fail_fast}, redis_url={redis!r})"
        )


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


_Change = Tuple[str, str]


class HostBreaker:
    """The breaker of one key.  Thread-safe; no lock is held across I/O.

    ``admit(now)`` returns a ticket (0: an ordinary request, >0: a half-open
    trial) or raises :class:`CircuitOpenError`; exactly one of
    ``record_success``/``record_failure``/``record_neutral`` must follow
    with that ticket.
    """

    def __init__(
        self,
        key: str,
        settings: BreakerSettings,
        *,
        half_open_trials: int,
        sync_interval: float,
        shared: Optional[RedisBreakerStorage] = None,
    ) -> None:
        import pybreaker

        self.key = key
        self.settings = settings
        self.storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self.shared = shared
        self._half_open_trials = half_open_trials
        self._sync_interval = sync_interval
        self._lock = threading.Lock()
        self._retry_at = 0.0  # while open: when the next trial may go
        self._timeouts = 0  # consecutive timeouts
        self._trials = 0  # trials in flight (half-open)
        self._trial_gen = 0  # ticket of the current trial lease
        self._trial_until = 0.0  # trial lease expiry
        self._epoch = 0  # bumped on every local transition
        self._next_sync = 0.0
        self._syncing = False
        self._pending_push = False  # opened while Redis was unreachable
        self._pushing = 0  # writes to Redis in flight
        self._shared_counter = 0  # last fail_counter seen in Redis
        self.last_used = 0.0

    def __repr__(self) -> str:
        return f"<HostBreaker {self.key} {self.state} failures={self.storage.counter}>"

    @property
    def state(self) -> str:
        return str(self.storage.state)

    @property
    def retry_at(self) -> Optional[float]:
        return self._retry_at if self.state != CLOSED else None

    @property
    def evictable(self) -> bool:
        return self.storage.state == CLOSED and self._trials == 0

    # -- before the request ---------------------------------------------------

    def admit(self, now: float) -> int:
        self.last_used = now
        if self.shared is not None and now >= self._next_sync:
            self._pull(now)
        state = self.storage.state
        if state == CLOSED:
            return 0
        if state == OPEN and now < self._retry_at:
            if self._retry_at - now > self.settings.reset_timeout:
                # The clock went back: wait one period from now, not from then.
                self._retry_at = now + self.settings.reset_timeout
            raise self._error(self._retry_at)
        return self._admit_trial(now)

    def _admit_trial(self, now: float) -> int:
        changes: List[_Change] = []
        deny: Optional[float] = None
        ticket = 0
        with self._lock:
            state = self.storage.state
            if state == OPEN:
                if now < self._retry_at:
                    deny = self._retry_at
                else:
                    self._set(HALF_OPEN, changes)
                    self._trials = 0
                    state = HALF_OPEN
            if state == HALF_OPEN and deny is None:
                if now >= self._trial_until:
                    # A lease ran out (a trial with no timeout, or a process
                    # that died mid-trial): forget it rather than stay stuck.
                    self._trials = 0
                if self._trials < self._half_open_trials:
                    if self._trials == 0:
                        self._trial_gen += 1
                        self._trial_until = now + self.settings.reset_timeout
                    self._trials += 1
                    ticket = self._trial_gen
                else:
                    deny = self._trial_until
            epoch = self._epoch
            claim = bool(ticket) and self.shared is not None
            if claim:
                self._pushing += 1
        self._notify(changes)
        if deny is not None:
            raise self._error(deny)
        if claim:
            assert self.shared is not None
            snap = self.shared.claim(
                now,
                self.settings.reset_timeout,
                self.settings.reset_timeout,
                self._half_open_trials,
            )
            if snap is not None and (not snap.granted or snap.state == CLOSED):
                self._release(ticket)
            self._adopt(snap, epoch, now, pushed=True)
            if snap is not None and not snap.granted:
                # Another process holds the fleet's trial: step back.
                raise self._error(
                    max(snap.trial_until, snap.opened_at + self.settings.reset_timeout)
                )
            if snap is not None and snap.state == CLOSED:
                return 0  # closed elsewhere meanwhile: an ordinary request
        return ticket

    def _error(self, retry_at: float) -> CircuitOpenError:
        return CircuitOpenError(self.key, retry_at)

    # -- after the request ------------------------------------------------------
    # Each write to Redis is counted in _pushing from the moment the local
    # state changes until Redis has answered: a pull that read Redis in that
    # window saw the state from before this process's change and is dropped.

    def record_success(self, ticket: int, now: float, fresh: bool = False) -> None:
        """A good outcome.  ``fresh``: it came on a connection opened for it,
        which proves the host reachable now, so a breaker that is not closed
        closes on it (a trial or not): a burst of dead flows, or requests
        admitted before the trip, cannot keep a reachable host open."""
        if not ticket and not (fresh and self.storage.state != CLOSED):
            # The common case, lock-free: nothing to reset.
            if not (self.storage.counter or self._timeouts or self._shared_counter):
                return
            with self._lock:
                if self.storage.state == CLOSED:
                    self.storage.reset_counter()
                    self._timeouts = 0
                epoch = self._epoch
                push = self.shared is not None and self._shared_counter > 0
                self._shared_counter = 0
                if push:
                    self._pushing += 1
            if push:
                assert self.shared is not None
                self._adopt(self.shared.succeed(now, is_trial=False), epoch, now, pushed=True)
            return
        changes: List[_Change] = []
        with self._lock:
            state = self.storage.state
            closed = state != CLOSED and (
                fresh or (ticket == self._trial_gen and state == HALF_OPEN)
            )
            if closed:
                self._close(changes)
            epoch = self._epoch
            push = closed and self.shared is not None
            if push:
                self._pushing += 1
        self._notify(changes)
        if push:
            assert self.shared is not None
            self._adopt(self.shared.succeed(now, is_trial=True), epoch, now, pushed=True)

    def record_failure(self, ticket: int, now: float, timeout: bool = False) -> None:
        changes: List[_Change] = []
        with self._lock:
            state = self.storage.state
            opened = False
            if ticket:
                if ticket == self._trial_gen and state == HALF_OPEN:
                    self._open(now, changes)
                    opened = True
            elif state == CLOSED:
                self.storage.increment_counter()
                self._timeouts = self._timeouts + 1 if timeout else 0
                limit = self.settings.timeout_fail_fast  # 0: the rule is off
                forced = limit > 0 and self._timeouts >= limit
                if forced or self.storage.counter >= self.settings.fail_max:
                    self._open(now, changes)
                    opened = True
            # Otherwise a late outcome of a request admitted before the trip:
            # the breaker already knows.
            epoch = self._epoch
            push = self.shared is not None and (opened or state == CLOSED)
            if push:
                self._pushing += 1
        self._notify(changes)
        if push:
            assert self.shared is not None
            snap = self.shared.fail(
                now, self.settings.fail_max, force_open=opened, is_trial=bool(ticket)
            )
            if snap is None and opened:
                self._pending_push = True
            self._adopt(snap, epoch, now, pushed=True)

    def record_neutral(self, ticket: int, now: float) -> None:
        """An outcome that says nothing about the host (e.g. a bad URL)."""
        if ticket:
            released = self._release(ticket)
            if released and self.shared is not None:
                self.shared.release(now)

    def _release(self, ticket: int) -> bool:
        with self._lock:
            if ticket == self._trial_gen and self._trials > 0:
                self._trials -= 1
                return True
        return False

    # -- transitions (called with the lock held) ------------------------------

    def _set(self, new: str, changes: List[_Change]) -> None:
        old = self.storage.state
        if old != new:
            self.storage.state = new
            self._epoch += 1
            changes.append((old, new))

    def _open(self, now: float, changes: List[_Change], opened_at: Optional[float] = None) -> None:
        at = now if opened_at is None else opened_at
        self.storage.opened_at = _utc(at)
        self.storage.reset_success_counter()
        # Bounded by now + reset_timeout, whatever another clock said.
        self._retry_at = min(at + self.settings.reset_timeout, now + self.settings.reset_timeout)
        self._trials = 0
        self._epoch += 1
        self._set(OPEN, changes)

    def _close(self, changes: List[_Change]) -> None:
        self.storage.reset_counter()
        self.storage.reset_success_counter()
        self._timeouts = 0
        self._trials = 0
        self._pending_push = False
        self._set(CLOSED, changes)

    def _notify(self, changes: List[_Change]) -> None:
        for old, new in changes:
            _log.info("circuit breaker %s: %s -> %s", self.key, old, new)
            try:
                hooks().breaker_transition(self.key, old, new)
            except Exception:  # a metrics back-end must not break requests
                _log.exception("instrumentation failed on breaker_transition")

    # -- shared state -------------------------------------------------------------

    def _pull(self, now: float) -> None:
        with self._lock:
            if self._syncing or self._pushing or now < self._next_sync:
                return
            self._syncing = True
            epoch = self._epoch
            push = self._pending_push and self.storage.state == OPEN and now < self._retry_at
            opened_at = now
            if push:
                self._pushing += 1
                opened = self.storage.opened_at
                opened_at = opened.timestamp() if opened is not None else now
        assert self.shared is not None
        try:
            if push:
                # Opened while Redis was away, or Redis lost the state: publish
                # it now, with the time it opened here.
                snap = self.shared.fail(
                    now,
                    self.settings.fail_max,
                    force_open=True,
                    is_trial=False,
                    opened_at=opened_at,
                )
            else:
                snap = self.shared.fetch(now)
        finally:
            with self._lock:
                self._syncing = False
                self._next_sync = now + self._sync_interval
        if snap is not None and push:
            self._pending_push = False
        self._adopt(snap, epoch, now, pushed=push)

    def _adopt(
        self, snap: Optional[Snapshot], epoch: int, now: float, *, pushed: bool = False
    ) -> None:
        """Take the fleet's view, unless a local change raced the round trip."""
        changes: List[_Change] = []
        with self._lock:
            if pushed:
                self._pushing -= 1
            if snap is None or self._epoch != epoch or (self._pushing and not pushed):
                return
            local = self.storage.state
            if not snap.existed and local != CLOSED:
                # Redis has no state for a breaker this process holds open
                # (FLUSHALL, a restart without persistence): its "closed" is
                # no verdict about the host.  Keep the local state and
                # publish it at the next pull, as after an outage.
                if local == OPEN:
                    self._pending_push = True
                    self._next_sync = now
                return
            self._shared_counter = snap.fail_counter
            if snap.state == OPEN:
                retry_at = min(
                    snap.opened_at + self.settings.reset_timeout,
                    now + self.settings.reset_timeout,
                )
                if local != OPEN or retry_at > self._retry_at:
                    self._open(now, changes, opened_at=snap.opened_at)
            elif snap.state == HALF_OPEN:
                # Another process is trying the host: wait for its verdict
                # (until its lease ends) instead of asking Redis per request.
                if local == CLOSED or (local == HALF_OPEN and self._trials == 0):
                    self._open(now, changes)
                if self.storage.state == OPEN:
                    self._retry_at = min(snap.trial_until, now + self.settings.reset_timeout)
            elif snap.state == CLOSED and local == OPEN and not self._pending_push:
                self._close(changes)
        self._notify(changes)


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
        #: Bumped whenever a breaker leaves the registry, so that a
        #: :class:`BreakerLookup` holding it looks again.
        self.generation = 0
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
        self.generation += 1
        for _, k in closed[:batch]:
            del self._breakers[k]
            self.evicted += 1
        if closed:
            return
        k, victim = min(self._breakers.items(), key=lambda item: item[1]._retry_at)
        del self._breakers[k]
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
            self._breakers.clear()
            self.generation += 1
        for link in links:
            link.close()


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


# Exceptions that can be about the host.  requests' and urllib3's invalid-input
# errors (bad URL, bad header, missing schema) are ValueErrors: they never
# reach the network and say nothing about the host.
_HOST_ERRORS: Final = (OSError, requests.RequestException, u3.HTTPError)


def _record_exception(
    breaker: HostBreaker,
    ticket: int,
    exc: BaseException,
    now: float,
    proxy: Optional[HostBreaker] = None,
    proxy_ticket: int = 0,
) -> None:
    """Count a failed request against whom its evidence blames (see _failure)."""
    if isinstance(exc, ValueError) or not isinstance(exc, _HOST_ERRORS):
        blame, timeout = NOBODY, False
    else:
        failure = failure_of(exc) or unattached(exc)
        blame, timeout = failure.blame, failure.decision.timeout
    if blame == HOST:
        breaker.record_failure(ticket, now, timeout=timeout)
    else:
        breaker.record_neutral(ticket, now)
    if proxy is not None:
        if blame == PROXY:
            proxy.record_failure(proxy_ticket, now, timeout=timeout)
        else:
            proxy.record_neutral(proxy_ticket, now)


def _fresh(response: requests.Response) -> bool:
    """Did ``response`` come on a connection opened for it (see _connection)?"""
    raw = response.raw
    fresh = getattr(raw, "azguard_fresh", None)
    if fresh is None:  # urllib3 1.26: on the http.client response it wraps
        fresh = getattr(getattr(raw, "_original_response", None), "azguard_fresh", False)
    return bool(fresh)


class BreakerLookup:
    """``request -> HostBreaker`` for one adapter.

    Finding a request's breaker means parsing its URL for the key and hashing
    the settings and key into the registry: about 0.9 µs of CPU on every
    request, a fifth of the guard's whole cost in a busy loop.  With the
    default key the answer depends only on the URL and on the registry (a
    reset replaces it, an eviction bumps its ``generation``), so it is
    memoised per URL; a custom key function may look at anything in the
    request and is asked every time.
    """

    #: URLs remembered; past that the memo starts again (URLs with unique
    #: query strings would otherwise grow it without bound).
    MAX_URLS: Final = 256

    __slots__ = ("_by_url", "_generation", "_registry", "_settings", "config", "key")

    def __init__(self, config: GuardConfig, key: Optional[BreakerKey] = None) -> None:
        self.config = config
        self.key = key
        self._settings = BreakerSettings.of(config)
        self._registry: Optional[BreakerRegistry] = None
        self._generation = -1
        self._by_url: Dict[str, HostBreaker] = {}

    def __call__(self, request: requests.PreparedRequest) -> HostBreaker:
        reg = _registry if _registry is not None else registry()
        if self.key is not None:
            name = self.key(request)
            if not isinstance(name, str):
                raise ConfigError("breaker key", name, "a str returned by the breaker key function")
            return reg.get(self._settings, name)
        url = request.url or ""
        if reg is self._registry and reg.generation == self._generation:
            found = self._by_url.get(url)
            if found is not None:
                return found
            if len(self._by_url) >= self.MAX_URLS:
                self._by_url = {}
        else:
            # Another thread may be filling the old dict: start a new one.
            self._by_url = {}
            self._registry = reg
            self._generation = reg.generation
        breaker = reg.get(self._settings, breaker_key(request))
        self._by_url[url] = breaker
        return breaker

    def proxy(self, proxy_url: str) -> HostBreaker:
        """The breaker of the proxy at ``proxy_url``."""
        reg = _registry if _registry is not None else registry()
        return reg.get(self._settings, proxy_breaker_key(proxy_url))


def _open_circuit(
    breaker: HostBreaker,
    err: CircuitOpenError,
    request: requests.PreparedRequest,
    config: GuardConfig,
    fallback: Optional[Callable[[requests.PreparedRequest, Exception], requests.Response]],
    connection: Any,
    now: float,
) -> requests.Response:
    """The answer while ``breaker`` is open: the fallback's, a synthetic one, or ``err``."""
    err.request = request
    if fallback is not None:
        # Called inside this handler so that an error it raises carries
        # the breaker's error as __context__.
        response = fallback(request, err)
        if not isinstance(response, requests.Response):
            raise ConfigError("fallback return value", response, "a requests.Response") from err
    elif config.fallback_status is not None:
        from ._fallback import synthetic_response

        response = synthetic_response(request, config.fallback_status, err, now, connection)
    else:
        raise err
    try:
        hooks().fallback_served(breaker.key)
    except Exception:  # a metrics back-end must not break requests
        _log.exception("instrumentation failed on fallback_served")
    return response


def guarded_send(
    breaker: HostBreaker,
    request: requests.PreparedRequest,
    config: GuardConfig,
    transport: Callable[[], requests.Response],
    fallback: Optional[Callable[[requests.PreparedRequest, Exception], requests.Response]],
    connection: Any,
    proxy: Optional[HostBreaker] = None,
) -> requests.Response:
    """Run ``transport()`` behind ``breaker`` (see :class:`BreakerLookup`), and
    behind ``proxy``, the breaker of the proxy the request goes through.

    Open breaker: ``fallback(request, error)`` if given, else a synthetic
    ``config.fallback_status`` response, else :class:`CircuitOpenError`
    (:class:`ProxyCircuitOpenError` for the proxy's).  The outcome counts
    against whom its evidence blames: the host, the proxy, or nobody.
    """
    clock = (_registry if _registry is not None else registry()).clock
    proxy_ticket = 0
    if proxy is not None:
        try:
            proxy_ticket = proxy.admit(clock())
        except CircuitOpenError as err:
            proxy_err = ProxyCircuitOpenError(err.host, err.retry_at)
            return _open_circuit(proxy, proxy_err, request, config, fallback, connection, clock())
    try:
        ticket = breaker.admit(clock())
    except CircuitOpenError as err:
        if proxy is not None:
            proxy.record_neutral(proxy_ticket, clock())
        return _open_circuit(breaker, err, request, config, fallback, connection, clock())
    try:
        response = transport()
    except BaseException as exc:
        _record_exception(breaker, ticket, exc, clock(), proxy, proxy_ticket)
        raise
    if response.status_code in config.breaker_statuses:
        breaker.record_failure(ticket, clock())
    else:
        fresh = breaker.storage.state != CLOSED and _fresh(response)
        breaker.record_success(ticket, clock(), fresh)
    if proxy is not None:
        # The proxy carried the request there and back: it works.
        proxy.record_success(proxy_ticket, clock())
    return response
