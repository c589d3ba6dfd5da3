"""The circuit breaker's state machine, as one pure function.

``transition(state, event, now, limits) -> (state, effects)`` takes every
decision a breaker makes: count a failure, open (after ``fail_max`` failures,
or at once after ``timeout_fail_fast`` consecutive connect timeouts), refuse a
request while open, let bounded trials through once ``reset_timeout`` has
passed, close on a good trial or on any success over a fresh connection, and
take (or refuse) the fleet's word from Redis.  It does no I/O, takes no lock
and reads no clock: ``now`` is an argument, so every row can be tested as a
table (``tests/test_breaker_transition.py``).

``_breaker.HostBreaker`` stores the state it returns (pybreaker's storage for
what pybreaker has fields for, the breaker itself for the rest) and acts on
the effects: logs and instrumentation for ``changes``, Redis for the rest.
"""

from __future__ import annotations

from typing import Final, NamedTuple, Optional, Tuple, Union

__all__ = [
    "ADMIT",
    "CLOSED",
    "HALF_OPEN",
    "NO_EFFECTS",
    "OPEN",
    "Admit",
    "BreakerState",
    "Effects",
    "Event",
    "Failure",
    "Limits",
    "Neutral",
    "Remote",
    "Success",
    "transition",
]

# pybreaker's state names (pybreaker.STATE_*), spelled out so that importing
# this module does not import pybreaker, which imports redis (~0.1 s).
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"


class Limits(NamedTuple):
    """What a breaker's decisions depend on, besides its state and the time."""

    fail_max: int
    reset_timeout: float
    #: Consecutive connect timeouts that open at once; 0: the rule is off.
    timeout_fail_fast: int
    #: Trials let through at once while half-open.
    half_open_trials: int


class BreakerState(NamedTuple):
    """One breaker's state.  ``name``, ``failures`` and ``opened_at`` are
    pybreaker's fields (state, fail counter, opened_at); the rest are what
    pybreaker's storage has no field for."""

    name: str = CLOSED
    #: Consecutive failures while closed (kept while open, as pybreaker does).
    failures: int = 0
    #: Consecutive timeouts among them.
    timeouts: int = 0
    opened_at: Optional[float] = None
    #: While open: when the next trial may go.
    retry_at: float = 0.0
    #: Trials in flight (half-open).
    trials: int = 0
    #: The ticket of the current trial lease (0: none yet).
    trial_gen: int = 0
    #: When that lease runs out.
    trial_until: float = 0.0
    #: Bumped on every opening and every change of state: a Redis answer
    #: read before the bump is about a state that is gone.
    epoch: int = 0


class Admit(NamedTuple):
    """A request asks to go out."""


class Success(NamedTuple):
    """A good outcome.  ``fresh``: it came on a connection opened for it."""

    ticket: int = 0
    fresh: bool = False


class Failure(NamedTuple):
    """An outcome that blames the host.  ``timeout``: a connect timeout."""

    ticket: int = 0
    timeout: bool = False


class Neutral(NamedTuple):
    """An outcome that says nothing about the host: a trial slot is free again."""

    ticket: int = 0


class Remote(NamedTuple):
    """The fleet's view of this breaker, as Redis answered it."""

    state: str
    opened_at: float
    trial_until: float
    #: False when Redis had no record (it lost its data, or never had any).
    existed: bool = True
    #: This process opened while Redis was unreachable and has not published
    #: it yet: the fleet's "closed" predates what this process knows.
    unpublished: bool = False


Event = Union[Admit, Success, Failure, Neutral, Remote]

ADMIT: Final = Admit()


class Effects(NamedTuple):
    """What an event did, for the breaker to act on."""

    #: (old, new) state names, in order, for logs and instrumentation.
    changes: Tuple[Tuple[str, str], ...] = ()
    #: Admit: 0 for an ordinary request, > 0 a half-open trial's ticket.
    ticket: int = 0
    #: Admit: refused; the next trial may go at this time.
    deny: Optional[float] = None
    opened: bool = False
    closed: bool = False
    #: Failure: it arrived while closed, so it belongs in the fleet's count
    #: (a late trial's is not counted here: its lease is gone).
    counted: bool = False
    #: Neutral: a trial slot was given back.
    released: bool = False
    #: Remote: Redis had no record of a breaker that is not closed here, so
    #: its "closed" is no verdict about the host: ignored.
    stale: bool = False


NO_EFFECTS: Final = Effects()

_Result = Tuple[BreakerState, Effects]


def _open(state: BreakerState, now: float, at: float, limits: Limits) -> BreakerState:
    # Bounded by now + reset_timeout, whatever another machine's clock said.
    return state._replace(
        name=OPEN,
        opened_at=at,
        retry_at=min(at + limits.reset_timeout, now + limits.reset_timeout),
        trials=0,
        epoch=state.epoch + 1,
    )


def _close(state: BreakerState) -> BreakerState:
    return state._replace(name=CLOSED, failures=0, timeouts=0, trials=0, epoch=state.epoch + 1)


def _admit(state: BreakerState, now: float, limits: Limits) -> _Result:
    if state.name == CLOSED:
        return state, NO_EFFECTS
    changes: Tuple[Tuple[str, str], ...] = ()
    if state.name == OPEN:
        if now < state.retry_at:
            # A clock that went back waits one period from now, not from then.
            retry_at = min(state.retry_at, now + limits.reset_timeout)
            return state._replace(retry_at=retry_at), Effects(deny=retry_at)
        state = state._replace(name=HALF_OPEN, trials=0, epoch=state.epoch + 1)
        changes = ((OPEN, HALF_OPEN),)
    trials = state.trials
    if now >= state.trial_until:
        # A lease ran out (a trial with no timeout, or a process that died
        # mid-trial): forget it rather than stay stuck.
        trials = 0
    if trials >= limits.half_open_trials:
        return state, Effects(changes, deny=state.trial_until)
    if trials == 0:
        state = state._replace(
            trial_gen=state.trial_gen + 1, trial_until=now + limits.reset_timeout
        )
    state = state._replace(trials=trials + 1)
    return state, Effects(changes, ticket=state.trial_gen)


def _success(state: BreakerState, event: Success) -> _Result:
    if state.name == CLOSED:
        if event.ticket or not (state.failures or state.timeouts):
            return state, NO_EFFECTS
        return state._replace(failures=0, timeouts=0), NO_EFFECTS
    # A fresh connection proves the host reachable now, trial or not: a burst
    # of dead flows, or requests admitted before the trip, cannot keep a
    # reachable host open.
    trial = event.ticket and event.ticket == state.trial_gen and state.name == HALF_OPEN
    if event.fresh or trial:
        return _close(state), Effects(((state.name, CLOSED),), closed=True)
    return state, NO_EFFECTS


def _failure(state: BreakerState, event: Failure, now: float, limits: Limits) -> _Result:
    if event.ticket:
        if event.ticket == state.trial_gen and state.name == HALF_OPEN:
            return _open(state, now, now, limits), Effects(((HALF_OPEN, OPEN),), opened=True)
        return state, Effects(counted=state.name == CLOSED)
    if state.name != CLOSED:
        # A late outcome of a request admitted before the trip: the breaker
        # already knows.
        return state, NO_EFFECTS
    state = state._replace(
        failures=state.failures + 1,
        timeouts=state.timeouts + 1 if event.timeout else 0,
    )
    forced = limits.timeout_fail_fast > 0 and state.timeouts >= limits.timeout_fail_fast
    if forced or state.failures >= limits.fail_max:
        opened = _open(state, now, now, limits)
        return opened, Effects(((CLOSED, OPEN),), opened=True, counted=True)
    return state, Effects(counted=True)


def _neutral(state: BreakerState, event: Neutral) -> _Result:
    if event.ticket and event.ticket == state.trial_gen and state.trials > 0:
        return state._replace(trials=state.trials - 1), Effects(released=True)
    return state, NO_EFFECTS


def _remote(state: BreakerState, event: Remote, now: float, limits: Limits) -> _Result:
    local = state.name
    if not event.existed and local != CLOSED:
        return state, Effects(stale=True)
    if event.state == OPEN:
        retry_at = min(event.opened_at + limits.reset_timeout, now + limits.reset_timeout)
        if local == OPEN and retry_at <= state.retry_at:
            return state, NO_EFFECTS
        changes = ((local, OPEN),) if local != OPEN else ()
        return _open(state, now, event.opened_at, limits), Effects(changes, opened=True)
    if event.state == HALF_OPEN:
        # Another process is trying the host: wait for its verdict (until its
        # lease ends) instead of asking Redis per request.
        effects = NO_EFFECTS
        if local == CLOSED or (local == HALF_OPEN and state.trials == 0):
            state = _open(state, now, now, limits)
            effects = Effects(((local, OPEN),), opened=True)
        if state.name == OPEN:
            state = state._replace(retry_at=min(event.trial_until, now + limits.reset_timeout))
        return state, effects
    if event.state == CLOSED and local == OPEN and not event.unpublished:
        return _close(state), Effects(((OPEN, CLOSED),), closed=True)
    return state, NO_EFFECTS


def transition(state: BreakerState, event: Event, now: float, limits: Limits) -> _Result:
    """The breaker's next state and what the event did.  Pure: the same
    arguments always give the same answer."""
    if isinstance(event, Success):
        return _success(state, event)
    if isinstance(event, Failure):
        return _failure(state, event, now, limits)
    if isinstance(event, Admit):
        return _admit(state, now, limits)
    if isinstance(event, Neutral):
        return _neutral(state, event)
    return _remote(state, event, now, limits)
