"""A breaker's reconciliation with the fleet's state in Redis.

Each breaker mirrors its Redis hash (``_breaker_redis``), read at most once
per ``sync_interval`` (default 0.5 s) on the request path, so the hot path is
a dict lookup and a state check; the price is that a trip in another process
is seen up to ``sync_interval`` late.  Outcomes that change state are written
through at once.  With Redis unreachable the local state machine keeps
working, and an opening made meanwhile is published when Redis answers again.

Races: each write to Redis is counted in ``_pushing`` from the moment the
local state changes until Redis has answered, and every local change bumps
the state's ``epoch``; an answer read before a local change, or while a write
is in flight, is about a state that is gone and is dropped.  The fleet's
answer itself is judged by ``_breaker_transition`` (a ``Remote`` event).

:class:`FleetSync` is mixed into ``_breaker.HostBreaker``, whose lock, state
and transition step it uses; no lock is held across a Redis round trip.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Optional, Tuple

from ._breaker_transition import CLOSED, OPEN, Effects, Event, Limits, Remote

if TYPE_CHECKING:
    from ._breaker_redis import RedisBreakerStorage, Snapshot
    from ._errors import CircuitOpenError

__all__ = ["FleetSync"]


class FleetSync:
    """The Redis side of a breaker (a mixin of ``_breaker.HostBreaker``)."""

    # The breaker's, set by HostBreaker.__init__.
    limits: Limits
    storage: Any  # pybreaker.CircuitMemoryStorage
    _lock: threading.Lock
    _epoch: int
    _retry_at: float

    def _step(self, event: Event, now: float) -> Effects:
        raise NotImplementedError

    def _release(self, ticket: int, now: float) -> bool:
        raise NotImplementedError

    def _error(self, retry_at: float) -> CircuitOpenError:
        raise NotImplementedError

    def _notify(self, changes: Tuple[Tuple[str, str], ...]) -> None:
        raise NotImplementedError

    def _mirror(self) -> None:
        raise NotImplementedError

    def _init_sync(self, shared: Optional[RedisBreakerStorage], sync_interval: float) -> None:
        self.shared = shared
        self._sync_interval = sync_interval
        self._next_sync = 0.0
        self._syncing = False
        self._pending_push = False  # opened while Redis was unreachable
        self._pushing = 0  # writes to Redis in flight
        self._shared_counter = 0  # last fail_counter seen in Redis

    # -- deciding to write (called with the lock held, right after a step) -----

    def _reserve(self, wanted: bool) -> Optional[int]:
        """The epoch to write under, or None: nothing goes to Redis."""
        if not wanted or self.shared is None:
            return None
        self._pushing += 1
        return self._epoch

    def _reserve_success(self, effects: Effects, ticket: int) -> Optional[int]:
        if effects.closed:
            self._pending_push = False  # nothing left to publish
            return self._reserve(True)
        if ticket or not self._shared_counter:
            return None
        # An ordinary success resets the fleet's count too, once.
        self._shared_counter = 0
        self._mirror()
        return self._reserve(True)

    # -- writing (no lock held) ---------------------------------------------------

    def _claim(self, ticket: int, epoch: int, now: float) -> int:
        """Claim the fleet's trial for local trial ``ticket``."""
        assert self.shared is not None
        limits = self.limits
        snap = self.shared.claim(
            now, limits.reset_timeout, limits.reset_timeout, limits.half_open_trials
        )
        if snap is not None and (not snap.granted or snap.state == CLOSED):
            self._release(ticket, now)
        self._adopt(snap, epoch, now, pushed=True)
        if snap is not None and not snap.granted:
            # Another process holds the fleet's trial: step back.
            raise self._error(max(snap.trial_until, snap.opened_at + limits.reset_timeout))
        if snap is not None and snap.state == CLOSED:
            return 0  # closed elsewhere meanwhile: an ordinary request
        return ticket

    def _publish_failure(self, epoch: int, now: float, *, opened: bool, is_trial: bool) -> None:
        assert self.shared is not None
        snap = self.shared.fail(now, self.limits.fail_max, force_open=opened, is_trial=is_trial)
        if snap is None and opened:
            self._pending_push = True
        self._adopt(snap, epoch, now, pushed=True)

    def _publish_success(self, epoch: int, now: float, *, is_trial: bool) -> None:
        assert self.shared is not None
        self._adopt(self.shared.succeed(now, is_trial=is_trial), epoch, now, pushed=True)

    def _publish_release(self, now: float) -> None:
        if self.shared is not None:
            self.shared.release(now)

    # -- reading ------------------------------------------------------------------

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
                    self.limits.fail_max,
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
        with self._lock:
            if pushed:
                self._pushing -= 1
            if snap is None or self._epoch != epoch or (self._pushing and not pushed):
                return
            remote = Remote(
                snap.state, snap.opened_at, snap.trial_until, snap.existed, self._pending_push
            )
            effects = self._step(remote, now)
            if effects.stale:
                # Redis has no state for a breaker this process holds open
                # (FLUSHALL, a restart without persistence).  Keep the local
                # state and publish it at the next pull, as after an outage.
                if self.storage.state == OPEN:
                    self._pending_push = True
                    self._next_sync = now
            else:
                self._shared_counter = snap.fail_counter
                self._mirror()
                if effects.closed:
                    self._pending_push = False
        self._notify(effects.changes)
