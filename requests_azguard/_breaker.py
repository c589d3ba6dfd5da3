"""The circuit breaker of one host: decisions stored in pybreaker's storage.

Why the state machine is not driven by ``pybreaker.CircuitBreaker``:
pybreaker 1.4.1 runs the wrapped call inside ``with self._lock`` (an RLock
per breaker), so ``call()``/``calling()`` around a request serialise every
request to a host (four threads against a 20 ms server get 0.26x the
throughput), and its state objects take decisions of their own on its own
clock (``open()`` stamps ``datetime.now``; the open state's ``before_call``
compares with it).  Here the state is *checked* before the request and the
outcome *recorded* after it; every decision is taken by the pure
``_breaker_transition.transition`` and its result is stored in pybreaker's
``CircuitMemoryStorage`` (state under pybreaker's names, fail counter,
``opened_at``), so it reads the same as a pybreaker breaker's.  What that
storage has no field for (the next trial's time, the timeout streak, the
trial lease, the epoch) is kept on the breaker beside it.  The per-breaker
lock only guards a step of the state machine and is never held across
network I/O (neither the request nor a Redis round trip).

Around it: ``_breaker_registry`` (one breaker per ``scheme://host:port``,
process-wide), ``_breaker_sync`` (reconciliation with Redis) and
``_breaker_gate`` (the gate around ``send()``).

Clock: callers pass ``now`` (the registry's clock, ``time.time`` by default).
Wall-clock time because ``opened_at`` is shared between machines and
``CircuitOpenError.retry_at`` is documented as ``time.time()``.  A clock that
jumps back cannot keep a breaker open longer than one ``reset_timeout`` past
``now``.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional, Tuple

from ._breaker_sync import FleetSync
from ._breaker_transition import (
    ADMIT,
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerState,
    Effects,
    Event,
    Failure,
    Limits,
    Neutral,
    Success,
    transition,
)
from ._errors import CircuitOpenError
from ._instrument import hooks

if TYPE_CHECKING:
    from ._breaker_redis import RedisBreakerStorage
    from ._config import GuardConfig

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "BreakerSettings",
    "HostBreaker",
]

_log = logging.getLogger("requests_azguard.breaker")


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


class HostBreaker(FleetSync):
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
        self.limits = Limits(
            settings.fail_max, settings.reset_timeout, settings.timeout_fail_fast, half_open_trials
        )
        self.storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self._lock = threading.Lock()
        # BreakerState's fields that pybreaker's storage has no place for.
        self._timeouts = 0
        self._retry_at = 0.0
        self._trials = 0
        self._trial_gen = 0
        self._trial_until = 0.0
        self._epoch = 0
        self.last_used = 0.0
        #: The clock of the registry that holds this breaker (``now`` for its calls).
        self.clock: Callable[[], float] = time.time
        #: Set once the registry has let this breaker go (evicted, or the
        #: registry reset): whoever remembered it must look its key up again.
        self.retired = False
        #: Plain-attribute mirrors of the storage, read lock-free on every
        #: request (pybreaker's are properties, a Python call each): closed;
        #: and calm, closed with nothing counted here or in Redis, when an
        #: ordinary request's success changes nothing (``record_success``
        #: may be skipped).  Written by _step only (and by the fleet sync's
        #: counter), under the lock.
        self.closed = True
        self.calm = True
        self._init_sync(shared, sync_interval)

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

    # -- the state machine's steps ------------------------------------------------

    def _step(self, event: Event, now: float) -> Effects:
        """Decide, then store the decision (called with the lock held)."""
        before = self._load()
        after, effects = transition(before, event, now, self.limits)
        if after != before:
            self._store(before, after)
        self._mirror()
        return effects

    def _mirror(self) -> None:
        closed = self.storage.state == CLOSED
        self.calm = (
            closed and not self.storage.counter and not self._timeouts and not self._shared_counter
        )
        self.closed = closed

    def _load(self) -> BreakerState:
        storage = self.storage
        opened = storage.opened_at
        return BreakerState(
            storage.state,
            storage.counter,
            self._timeouts,
            None if opened is None else opened.timestamp(),
            self._retry_at,
            self._trials,
            self._trial_gen,
            self._trial_until,
            self._epoch,
        )

    def _store(self, before: BreakerState, after: BreakerState) -> None:
        storage = self.storage
        if after.failures < before.failures:
            storage.reset_counter()
        while storage.counter < after.failures:
            storage.increment_counter()
        if after.opened_at is not None and after.opened_at != before.opened_at:
            storage.opened_at = _utc(after.opened_at)
        if after.epoch != before.epoch:
            # Opened, or left a state: pybreaker's half-open successes start again.
            storage.reset_success_counter()
        self._timeouts = after.timeouts
        self._retry_at = after.retry_at
        self._trials = after.trials
        self._trial_gen = after.trial_gen
        self._trial_until = after.trial_until
        self._epoch = after.epoch
        # Last, so that a lock-free reader of the state sees the rest first.
        if after.name != before.name:
            storage.state = after.name

    def _notify(self, changes: Tuple[Tuple[str, str], ...]) -> None:
        for old, new in changes:
            _log.info("circuit breaker %s: %s -> %s", self.key, old, new)
            try:
                hooks().breaker_transition(self.key, old, new)
            except Exception:  # a metrics back-end must not break requests
                _log.exception("instrumentation failed on breaker_transition")

    def _error(self, retry_at: float) -> CircuitOpenError:
        return CircuitOpenError(self.key, retry_at)

    # -- before the request ---------------------------------------------------

    def admit(self, now: float) -> int:
        self.last_used = now
        if self.shared is not None and now >= self._next_sync:
            self._pull(now)
        if self.closed:
            return 0  # transition()'s answer for a closed breaker, lock-free
        with self._lock:
            effects = self._step(ADMIT, now)
            epoch = self._reserve(effects.ticket > 0)
        self._notify(effects.changes)
        if effects.deny is not None:
            raise self._error(effects.deny)
        if epoch is not None:
            return self._claim(effects.ticket, epoch, now)
        return effects.ticket

    # -- after the request ------------------------------------------------------

    def record_success(self, ticket: int, now: float, fresh: bool = False) -> None:
        """A good outcome.  ``fresh``: it came on a connection opened for it,
        which proves the host reachable now, so a breaker that is not closed
        closes on it (a trial or not)."""
        if not ticket and self.calm:
            return  # the common case, lock-free: nothing to reset, here or in Redis
        with self._lock:
            effects = self._step(Success(ticket, fresh), now)
            epoch = self._reserve_success(effects, ticket)
        self._notify(effects.changes)
        if epoch is not None:
            self._publish_success(epoch, now, is_trial=effects.closed)

    def record_failure(self, ticket: int, now: float, timeout: bool = False) -> None:
        with self._lock:
            effects = self._step(Failure(ticket, timeout), now)
            epoch = self._reserve(effects.opened or effects.counted)
        self._notify(effects.changes)
        if epoch is not None:
            self._publish_failure(epoch, now, opened=effects.opened, is_trial=bool(ticket))

    def record_neutral(self, ticket: int, now: float) -> None:
        """An outcome that says nothing about the host (e.g. a bad URL)."""
        if ticket and self._release(ticket, now):
            self._publish_release(now)

    def _release(self, ticket: int, now: float) -> bool:
        with self._lock:
            return self._step(Neutral(ticket), now).released
