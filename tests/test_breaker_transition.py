"""The breaker's state machine as a table: state x event -> state, effects.

``transition`` is pure, so each row is one call: no sockets, no threads, no
clock but the ``now`` column.  ``test_every_state_meets_every_event`` checks
that the table has a row for each pair.  The rows use fail_max=3,
reset_timeout=10, timeout_fail_fast=2 and one half-open trial unless a row
says otherwise.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, List, NamedTuple

import pytest

from requests_azguard._breaker import BreakerSettings, HostBreaker
from requests_azguard._breaker_transition import (
    ADMIT,
    CLOSED,
    HALF_OPEN,
    NO_EFFECTS,
    OPEN,
    BreakerState,
    Effects,
    Event,
    Failure,
    Limits,
    Neutral,
    Remote,
    Success,
    transition,
)

LIMITS = Limits(fail_max=3, reset_timeout=10.0, timeout_fail_fast=2, half_open_trials=1)
TWO_TRIALS = LIMITS._replace(half_open_trials=2)
RULE_OFF = LIMITS._replace(timeout_fail_fast=0)

FRESH = BreakerState()
COUNTING = BreakerState(failures=2)
TIMED_OUT = BreakerState(failures=1, timeouts=1)
# Opened at 100 after three failures: the next trial may go at 110.
TRIPPED = BreakerState(OPEN, failures=3, opened_at=100.0, retry_at=110.0, epoch=1)
# Trial 1 went out at 110; its lease runs to 120.
TRYING = TRIPPED._replace(name=HALF_OPEN, trials=1, trial_gen=1, trial_until=120.0, epoch=2)
# That trial's outcome said nothing (Neutral): the slot is free again.
IDLE_TRIAL = TRYING._replace(trials=0)


def opened(state: BreakerState, at: float, now: float) -> BreakerState:
    return state._replace(
        name=OPEN, opened_at=at, retry_at=min(at, now) + 10.0, trials=0, epoch=state.epoch + 1
    )


def closed(state: BreakerState) -> BreakerState:
    return state._replace(name=CLOSED, failures=0, timeouts=0, trials=0, epoch=state.epoch + 1)


def moved(old: str, new: str, **effects: Any) -> Effects:
    return Effects(((old, new),), **effects)


class Row(NamedTuple):
    why: str
    state: BreakerState
    event: Event
    now: float
    new: BreakerState
    effects: Effects
    limits: Limits = LIMITS


ROWS: List[Row] = [
    # -- Admit ---------------------------------------------------------------------------
    Row("closed: an ordinary request", FRESH, ADMIT, 5.0, FRESH, NO_EFFECTS),
    Row("open: refused until retry_at", TRIPPED, ADMIT, 105.0, TRIPPED, Effects(deny=110.0)),
    Row(
        "open, the clock went back: one period from now",
        TRIPPED,
        ADMIT,
        50.0,
        TRIPPED._replace(retry_at=60.0),
        Effects(deny=60.0),
    ),
    Row(
        "open, reset timeout over: half-open, this request is the trial",
        TRIPPED,
        ADMIT,
        110.0,
        TRYING,
        moved(OPEN, HALF_OPEN, ticket=1),
    ),
    Row("half-open, trial in flight: refused", TRYING, ADMIT, 115.0, TRYING, Effects(deny=120.0)),
    Row(
        "half-open, lease ran out: a new trial with a new ticket",
        TRYING,
        ADMIT,
        120.0,
        TRYING._replace(trial_gen=2, trial_until=130.0),
        Effects(ticket=2),
    ),
    Row(
        "half-open, a second trial allowed: same lease",
        TRYING,
        ADMIT,
        115.0,
        TRYING._replace(trials=2),
        Effects(ticket=1),
        TWO_TRIALS,
    ),
    Row(
        "half-open, slot given back: a new trial",
        IDLE_TRIAL,
        ADMIT,
        115.0,
        TRYING._replace(trial_gen=2, trial_until=125.0),
        Effects(ticket=2),
    ),
    # -- Success -------------------------------------------------------------------------
    Row("closed: resets the count", COUNTING, Success(), 5.0, FRESH, NO_EFFECTS),
    Row("closed: resets the timeout streak", TIMED_OUT, Success(), 5.0, FRESH, NO_EFFECTS),
    Row("closed, nothing counted", FRESH, Success(fresh=True), 5.0, FRESH, NO_EFFECTS),
    Row("closed, a late trial's success", COUNTING, Success(ticket=1), 5.0, COUNTING, NO_EFFECTS),
    Row("open, a pooled connection proves nothing", TRIPPED, Success(), 105.0, TRIPPED, NO_EFFECTS),
    Row(
        "open, a fresh connection closes",
        TRIPPED,
        Success(fresh=True),
        105.0,
        closed(TRIPPED),
        moved(OPEN, CLOSED, closed=True),
    ),
    Row(
        "half-open, the trial succeeds: closed",
        TRYING,
        Success(ticket=1),
        115.0,
        closed(TRYING),
        moved(HALF_OPEN, CLOSED, closed=True),
    ),
    Row(
        "half-open, a fresh connection closes",
        TRYING,
        Success(fresh=True),
        115.0,
        closed(TRYING),
        moved(HALF_OPEN, CLOSED, closed=True),
    ),
    Row(
        "half-open, an expired lease's success",
        TRYING._replace(trial_gen=2),
        Success(ticket=1),
        115.0,
        TRYING._replace(trial_gen=2),
        NO_EFFECTS,
    ),
    # -- Failure -------------------------------------------------------------------------
    Row(
        "closed: counted",
        FRESH,
        Failure(),
        5.0,
        FRESH._replace(failures=1),
        Effects(counted=True),
    ),
    Row(
        "closed: the fail_max-th opens",
        COUNTING,
        Failure(),
        5.0,
        opened(COUNTING._replace(failures=3), 5.0, 5.0),
        moved(CLOSED, OPEN, opened=True, counted=True),
    ),
    Row(
        "closed: the timeout_fail_fast-th connect timeout opens at once",
        TIMED_OUT,
        Failure(timeout=True),
        5.0,
        opened(TIMED_OUT._replace(failures=2, timeouts=2), 5.0, 5.0),
        moved(CLOSED, OPEN, opened=True, counted=True),
    ),
    Row(
        "closed: connect timeouts with the rule off",
        TIMED_OUT,
        Failure(timeout=True),
        5.0,
        TIMED_OUT._replace(failures=2, timeouts=2),
        Effects(counted=True),
        RULE_OFF,
    ),
    Row(
        "closed: another failure breaks the timeout streak",
        TIMED_OUT,
        Failure(),
        5.0,
        TIMED_OUT._replace(failures=2, timeouts=0),
        Effects(counted=True),
    ),
    Row(
        "closed: a late trial's failure counts in the fleet only",
        COUNTING,
        Failure(ticket=1),
        5.0,
        COUNTING,
        Effects(counted=True),
    ),
    Row("open: a late outcome", TRIPPED, Failure(), 105.0, TRIPPED, NO_EFFECTS),
    Row(
        "half-open, the trial fails: open for a new period",
        TRYING,
        Failure(ticket=1),
        115.0,
        opened(TRYING, 115.0, 115.0),
        moved(HALF_OPEN, OPEN, opened=True),
    ),
    Row("half-open, an ordinary late failure", TRYING, Failure(), 115.0, TRYING, NO_EFFECTS),
    Row(
        "half-open, an expired lease's failure",
        TRYING._replace(trial_gen=2),
        Failure(ticket=1),
        115.0,
        TRYING._replace(trial_gen=2),
        NO_EFFECTS,
    ),
    # -- Neutral -------------------------------------------------------------------------
    Row("closed: nothing to give back", FRESH, Neutral(), 5.0, FRESH, NO_EFFECTS),
    Row("open: nothing to give back", TRIPPED, Neutral(ticket=1), 105.0, TRIPPED, NO_EFFECTS),
    Row(
        "half-open: the trial's slot is free again",
        TRYING,
        Neutral(ticket=1),
        115.0,
        IDLE_TRIAL,
        Effects(released=True),
    ),
    Row(
        "half-open: an expired lease's slot is not",
        TRYING._replace(trial_gen=2),
        Neutral(ticket=1),
        115.0,
        TRYING._replace(trial_gen=2),
        NO_EFFECTS,
    ),
    # -- Remote (the fleet's view) -------------------------------------------------------------
    Row(
        "closed, the fleet opened",
        FRESH,
        Remote(OPEN, 200.0, 0.0),
        201.0,
        opened(FRESH, 200.0, 201.0),
        moved(CLOSED, OPEN, opened=True),
    ),
    Row(
        "closed, another process is trying: wait for its lease",
        FRESH,
        Remote(HALF_OPEN, 200.0, 215.0),
        205.0,
        opened(FRESH, 205.0, 205.0)._replace(retry_at=215.0),
        moved(CLOSED, OPEN, opened=True),
    ),
    Row("closed, the fleet agrees", COUNTING, Remote(CLOSED, 0.0, 0.0), 5.0, COUNTING, NO_EFFECTS),
    Row(
        "closed, Redis lost its record: no verdict needed",
        COUNTING,
        Remote(CLOSED, 0.0, 0.0, existed=False),
        5.0,
        COUNTING,
        NO_EFFECTS,
    ),
    Row(
        "open, the fleet opened later: a later trial",
        TRIPPED,
        Remote(OPEN, 104.0, 0.0),
        105.0,
        opened(TRIPPED, 104.0, 105.0),
        Effects(opened=True),
    ),
    Row(
        "open, the fleet's opening is older",
        TRIPPED,
        Remote(OPEN, 99.0, 0.0),
        105.0,
        TRIPPED,
        NO_EFFECTS,
    ),
    Row(
        "open, another machine's clock is far ahead: one period from now",
        TRIPPED,
        Remote(OPEN, 9999.0, 0.0),
        105.0,
        opened(TRIPPED, 9999.0, 105.0),
        Effects(opened=True),
    ),
    Row(
        "open, another process is trying",
        TRIPPED,
        Remote(HALF_OPEN, 100.0, 108.0),
        105.0,
        TRIPPED._replace(retry_at=108.0),
        NO_EFFECTS,
    ),
    Row(
        "open, the fleet closed",
        TRIPPED,
        Remote(CLOSED, 0.0, 0.0),
        105.0,
        closed(TRIPPED),
        moved(OPEN, CLOSED, closed=True),
    ),
    Row(
        "open, not yet published: the fleet's closed is older",
        TRIPPED,
        Remote(CLOSED, 0.0, 0.0, unpublished=True),
        105.0,
        TRIPPED,
        NO_EFFECTS,
    ),
    Row(
        "open, Redis lost its record: kept",
        TRIPPED,
        Remote(CLOSED, 0.0, 0.0, existed=False),
        105.0,
        TRIPPED,
        Effects(stale=True),
    ),
    Row(
        "half-open with a trial in flight, another process trying too",
        TRYING,
        Remote(HALF_OPEN, 100.0, 125.0),
        115.0,
        TRYING,
        NO_EFFECTS,
    ),
    Row(
        "half-open, no trial here, another process trying: wait for it",
        IDLE_TRIAL,
        Remote(HALF_OPEN, 100.0, 125.0),
        115.0,
        opened(IDLE_TRIAL, 115.0, 115.0)._replace(retry_at=125.0),
        moved(HALF_OPEN, OPEN, opened=True),
    ),
    Row(
        "half-open, the fleet says closed: the local trial decides",
        TRYING,
        Remote(CLOSED, 0.0, 0.0),
        115.0,
        TRYING,
        NO_EFFECTS,
    ),
    Row(
        "half-open, Redis lost its record: kept",
        TRYING,
        Remote(CLOSED, 0.0, 0.0, existed=False),
        115.0,
        TRYING,
        Effects(stale=True),
    ),
    Row(
        "half-open, the fleet opened again",
        TRYING,
        Remote(OPEN, 114.0, 0.0),
        115.0,
        opened(TRYING, 114.0, 115.0),
        moved(HALF_OPEN, OPEN, opened=True),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.why for row in ROWS])
def test_transition(row: Row) -> None:
    assert transition(row.state, row.event, row.now, row.limits) == (row.new, row.effects)
    # Pure: the same arguments give the same answer again.
    assert transition(row.state, row.event, row.now, row.limits) == (row.new, row.effects)


@pytest.mark.parametrize("state", [CLOSED, OPEN, HALF_OPEN])
@pytest.mark.parametrize("event", [Success, Failure, Neutral, Remote, type(ADMIT)])
def test_every_state_meets_every_event(state: str, event: type) -> None:
    assert any(row.state.name == state and type(row.event) is event for row in ROWS)


def test_a_breaker_stores_the_decisions_in_pybreakers_storage() -> None:
    import pybreaker

    breaker = HostBreaker(
        "http://h:80", BreakerSettings(3, 10.0, 2, None), half_open_trials=1, sync_interval=0.5
    )
    assert isinstance(breaker.storage, pybreaker.CircuitMemoryStorage)
    for _ in range(2):
        breaker.record_failure(breaker.admit(5.0), 5.0)
    assert (breaker.storage.state, breaker.storage.counter) == (CLOSED, 2)
    breaker.record_failure(breaker.admit(5.0), 5.0)
    storage = breaker.storage
    assert (storage.state, storage.counter) == (pybreaker.STATE_OPEN, 3)
    assert storage.opened_at == datetime.fromtimestamp(5.0, timezone.utc)
    # pybreaker's own breaker, on the same storage, reads the same state.
    assert pybreaker.CircuitBreaker(state_storage=storage).current_state == OPEN
    breaker.record_success(breaker.admit(15.0), 15.0)
    assert (storage.state, storage.counter, storage.success_counter) == (CLOSED, 0, 0)
