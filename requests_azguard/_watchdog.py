"""The in-flight watchdog: requests waiting on dead flows, and relaxing idle connections.

While a replayable request is in flight its socket carries a tight
``TCP_USER_TIMEOUT`` (see ``_keepalive.inflight_options``): if its bytes stay
unacknowledged for several RTOs, the kernel gives up and the request is
replayed.  Two cases the kernel cannot see are watched here, by one daemon
thread:

* **Acknowledged, then silence.**  A request whose bytes were acknowledged
  just before the path died has nothing unacknowledged, so the timeout never
  fires.  Once such a request has waited ``PROBE_AFTER`` with the peer
  silent as long, its flow is probed every second (``probe_options``), and it
  is judged dead after ``VERDICT_PROBES`` consecutive unanswered probes and a
  few RTTs more: about 3.2 s after the peer last spoke.  One lost probe, or
  one lost answer, proves nothing (``inflight_action``); a slow server's
  kernel answers every probe, so it is never judged.
* **Siblings of a verdict.**  When a failure condemns a peer, every
  replayable request then waiting on an older flow to the same peer is
  aborted at once (``abort_inflight``) and replayed through the normal retry
  path, instead of each reaching its own verdict.

Aborting is ``shutdown(SHUT_RDWR)`` on the request's socket from the
watchdog's thread (local, never network I/O), after the connection records
why (``azguard_abort``), so the blocked reader wakes with an error that the
connection judges as that verdict.  Only requests that may be replayed are
registered, and only until their response headers arrive: a POST that may
not be replayed, or a ``stream=True`` body the caller is reading, is never
aborted.

Relaxing: a connection goes back to the pool still tight and is relaxed
later, by the next request that must not run tight, or by the janitor once
idle for ``RELAX_AFTER``: putting the generous options back on every return
costs setsockopt calls that a busy pool undoes at once (measured at about
14 µs per request, more than the rest of the guard together).

No lock on the request path: registering, parking and claiming are single
dict operations, atomic under the GIL, and whoever pops an entry owns it.
The thread holds its lock while it changes a socket's options or shuts it
down, so a request that finds its entry taken waits on that lock and then
sees the result, never a change under it mid-flight.  The thread runs only
while something is parked or in flight, and ends after a few quiet sweeps.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Final, List, Optional, Tuple

__all__ = [
    "ABORT",
    "PROBE",
    "PROBE_AFTER",
    "RELAX_AFTER",
    "SWEEP_EVERY",
    "VERDICT_PROBES",
    "WAIT",
    "abort_inflight",
    "after_fork_in_child",
    "claim",
    "inflight",
    "inflight_action",
    "park",
    "pending",
    "relax_all",
    "relax_due",
    "sweep",
    "unwatch",
    "watch",
]

#: Idle seconds after which a parked tight connection is relaxed.
RELAX_AFTER: Final = 0.5
#: Seconds a request waits, with its peer silent as long, before its flow is
#: probed: the kernel's shortest keepalive idle.
PROBE_AFTER: Final = 1.0
#: Consecutive unanswered probes for a verdict (each lost with probability
#: about 2p at packet loss p: at 3 % loss, three in a row is about 2e-4).
VERDICT_PROBES: Final = 3
#: How often the thread looks while requests are in flight or parked.
SWEEP_EVERY: Final = 0.1

WAIT: Final = "wait"
PROBE: Final = "probe"
ABORT: Final = "abort"


def inflight_action(
    waited: float,
    unacked: int,
    probes: int,
    silent: float,
    probing: bool,
    answer_time: float,
) -> str:
    """What to do about a request waiting for its answer (pure).

    :param waited: seconds since the request went out.
    :param unacked: our segments not acknowledged (the kernel's timeout's case).
    :param probes: keepalive probes sent since the peer last answered.
    :param silent: seconds since the peer's TCP last sent anything.
    :param probing: the flow already carries the probe options.
    :param answer_time: how long an answer to a probe may take (a few RTTs).
    """
    if unacked:
        return WAIT  # TCP_USER_TIMEOUT decides, from the first unacked byte
    if not probing:
        return PROBE if waited >= PROBE_AFTER and silent >= PROBE_AFTER else WAIT
    # The n-th probe leaves n - 1 intervals after the first; the last one
    # gets answer_time to be answered before the verdict.
    deadline = PROBE_AFTER + (VERDICT_PROBES - 1) * 1.0 + answer_time
    if probes >= VERDICT_PROBES and silent >= deadline:
        return ABORT
    return WAIT


_lock = threading.Lock()
_parked: Dict[int, Any] = {}
#: id(conn) -> (conn, monotonic time its request went out)
_inflight: Dict[int, Tuple[Any, float]] = {}
_thread: Optional[threading.Thread] = None
_fork_hook_registered = False
_busy = 0


def park(conn: Any) -> None:
    """``conn`` went back to the pool with tight options."""
    global _busy
    _parked[id(conn)] = conn
    _busy = 1
    if _thread is None:
        _start()


def claim(conn: Any) -> None:
    """A request took ``conn`` from the pool: the janitor must not touch it now.

    If the janitor popped it first, it is relaxing it under ``_lock``: waiting
    on the lock means the request then sees it relaxed.
    """
    if _parked.pop(id(conn), None) is None:
        with _lock:
            pass


def watch(conn: Any, now: float) -> None:
    """A replayable request on ``conn`` is waiting for its answer."""
    global _busy
    _inflight[id(conn)] = (conn, now)
    _busy = 1
    if _thread is None:
        _start()


def unwatch(conn: Any) -> None:
    """The answer came (or the request failed): stop watching ``conn``.

    If the watchdog took the entry first, it is probing or aborting the
    connection under ``_lock``: wait for it, so that nothing changes the
    socket once the request has moved on.
    """
    if _inflight.pop(id(conn), None) is None:
        with _lock:
            pass


def abort_inflight(peer: Any, opened_before: float, reason: str) -> int:
    """Abort every replayable request waiting on a flow to ``peer`` opened no
    later than ``opened_before``; returns how many."""
    aborted = 0
    for key, entry in list(_inflight.items()):
        conn = entry[0]
        opened = conn.azguard_opened_at
        if conn.azguard_peer != peer or opened is None or opened > opened_before:
            continue
        with _lock:
            if _inflight.get(key) is not entry:
                continue  # answered meanwhile: it owns its connection again
            del _inflight[key]
            conn.azguard_abort(reason)
        aborted += 1
    return aborted


def inflight() -> List[Any]:
    """Tests: the connections whose requests are watched right now."""
    return [entry[0] for entry in list(_inflight.values())]


def pending() -> List[Any]:
    """Tests: the connections parked tight right now."""
    with _lock:
        return list(_parked.values())


def relax_due(now: float) -> int:
    """Relax every parked connection idle for ``RELAX_AFTER``; returns how many."""
    relaxed = 0
    with _lock:
        for key, conn in list(_parked.items()):
            idle_since = conn.azguard_idle_since
            if idle_since is not None and now - idle_since < RELAX_AFTER:
                continue
            if _parked.pop(key, None) is None:
                continue  # claimed by a request meanwhile: it owns it now
            conn.azguard_relax()
            relaxed += 1
    return relaxed


def relax_all() -> int:
    """Relax every parked connection now (``azguard doctor``, tests)."""
    return relax_due(float("inf"))


def sweep(now: float) -> Dict[str, int]:
    """One look at every watched request (the thread calls it; tests step it).

    Reading ``TCP_INFO`` happens outside the lock; acting re-checks that the
    entry is still the same request under it.
    """
    done = {PROBE: 0, ABORT: 0}
    for key, entry in list(_inflight.items()):
        conn, since = entry
        if now - since < PROBE_AFTER:
            continue
        flow = conn.azguard_flow()
        if flow is None:
            continue
        answer = min(max(2 * (flow.rtt + 4 * flow.rttvar), 0.05), 0.5)
        action = inflight_action(
            now - since, flow.unacked, flow.probes, flow.silent, conn.azguard_probing, answer
        )
        if action == WAIT:
            continue
        with _lock:
            if _inflight.get(key) is not entry:
                continue
            if action == PROBE:
                conn.azguard_start_probing()
            else:
                del _inflight[key]
                conn.azguard_abort("blackhole")
        done[action] += 1
    return done


# Sweeps with nothing to do before the thread ends.  A busy pool is parked
# and watched only between and during requests, so an empty sweep is common;
# ending at the first one would start a new thread every few sweeps, and
# Thread.start() blocks the request thread until the new one runs.
_QUIET_SWEEPS: Final = 50

_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep


def _start() -> None:
    global _thread, _fork_hook_registered
    with _lock:
        if _thread is not None:
            return
        if not _fork_hook_registered:
            # A forked child has the entries but not the thread (_fork calls
            # after_fork_in_child; registered here too for a connection of a
            # pool _fork never saw).
            from . import _fork

            _fork.on_fork(after_fork_in_child)
            _fork_hook_registered = True
        _thread = threading.Thread(target=_run, name="requests-azguard-watchdog", daemon=True)
        _thread.start()


def _run() -> None:
    global _thread, _busy
    quiet = 0
    while True:
        _sleep(SWEEP_EVERY)
        now = _clock()
        relax_due(now)
        if _inflight:
            sweep(now)
        with _lock:
            quiet = 0 if (_parked or _inflight or _busy) else quiet + 1
            _busy = 0
            if quiet >= _QUIET_SWEEPS:
                _thread = None
                break
    # A park() or watch() racing the decision to end may have seen this
    # thread still set and started none: whatever it left gets a new one.
    if _parked or _inflight:
        _start()


def after_fork_in_child() -> None:
    """Called by _fork in a child: no thread, a new lock, nothing parked or
    watched (those connections are the parent's; the child's pools forget
    them, and the parent's own thread looks after them)."""
    global _thread, _lock
    _lock = threading.Lock()
    _thread = None
    _inflight.clear()
    _parked.clear()
