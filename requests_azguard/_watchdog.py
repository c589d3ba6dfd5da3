"""The in-flight watchdog: requests waiting on dead flows.

While a replayable request waits for its answer, one daemon thread reads its
flow's ``TCP_INFO`` and decides (``inflight_action``, pure) whether the flow
is dead; if it is, the request is aborted and replayed on a fresh connection.
Nothing about the socket changes on the request path: a tight
``TCP_USER_TIMEOUT`` would let the kernel drop a flow after three or four
lost segments in a row, which a few per cent of random loss produces every
few thousand requests, and only the watchdog can ask the other flows to the
same peer whether the path is dead or this flow was unlucky.

The evidence must survive ordinary loss, where each transmission goes
unanswered with probability about 2p at loss p (one direction or the other):

* **Unacknowledged bytes** (past ``ack_timeout``).  The kernel retransmits
  the oldest segment at each retransmission timeout, doubling the wait
  (0.2, 0.6, 1.4, 3.0 s at Linux's 200 ms minimum RTO, after the original
  and a tail-loss probe); bytes that cannot leave at all (a local firewall
  dropping a flow whose conntrack entry was lost) are retried by the probe
  timer on the same schedule, and count the same.  A verdict needs the
  latest try left unanswered for a few RTTs (``answer``) and:

  - ``ALONE_RETRANSMITS`` of them (about 3 s): a flow that died alone (a NAT
    forgot it) whatever its siblings do; at 5 % loss about 1e-6 per request;
  - ``UNHEARD_RETRANSMITS`` (about 1.4 s) when no flow to the peer opened
    before this request went out has heard from it in the last half of the
    wait: at 5 % loss about 1e-5 per request, before that condition;
  - ``STUCK_RETRANSMITS`` (about 0.6 s) when, besides, another request to the
    peer is stuck on unanswered retransmissions too: the common case of a
    migration under load, where every flow in flight stops at once, and two
    independent losses at the same moment are rare.

* **Acknowledged, then silence.**  A request whose bytes were acknowledged
  just before the path died has nothing unacknowledged.  Once it has waited
  ``PROBE_AFTER`` with the peer silent as long, its flow is probed every
  second (``_keepalive.probe_options``), and it is judged dead after
  ``VERDICT_PROBES`` consecutive unanswered probes and a few RTTs more:
  about 3.2 s after the peer last spoke.  A slow server's kernel answers
  every probe, so it is never judged.
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
aborted, and its flow never probed.

No lock on the request path: registering and unregistering are single dict
operations, atomic under the GIL, and whoever pops an entry owns it.  The
thread holds its lock while it changes a socket's options or shuts it down,
so a request that finds its entry taken (or being probed) waits on that lock
and then sees the result, never a change under it mid-flight.  The thread
runs only while something is in flight, and ends after a few quiet sweeps.
"""

from __future__ import annotations

import math
import threading
import time
from functools import partial
from typing import Any, Callable, Dict, Final, List, NamedTuple, Optional, Sequence, Tuple

from . import _fork
from ._tcpinfo import FlowState, answer_time

__all__ = [
    "ABORT",
    "ALONE_RETRANSMITS",
    "PROBE",
    "PROBE_AFTER",
    "STUCK_RETRANSMITS",
    "SWEEP_EVERY",
    "UNHEARD_RETRANSMITS",
    "VERDICT_PROBES",
    "WAIT",
    "Seen",
    "abort_inflight",
    "after_fork_in_child",
    "inflight",
    "inflight_action",
    "reset",
    "set_clock",
    "sweep",
    "unwatch",
    "watch",
]

#: Seconds a request waits, with its peer silent as long, before its flow is
#: probed: the kernel's shortest keepalive idle.
PROBE_AFTER: Final = 1.0
#: Consecutive unanswered probes for a verdict (each lost with probability
#: about 2p at packet loss p: at 3 % loss, three in a row is about 2e-4).
VERDICT_PROBES: Final = 3
#: Unanswered retransmission timeouts in a row for a verdict on a flow whose
#: siblings still hear from the peer, whose siblings do not, and whose
#: siblings are stuck too (see the module docstring).
ALONE_RETRANSMITS: Final = 4
UNHEARD_RETRANSMITS: Final = 3
STUCK_RETRANSMITS: Final = 2
#: How often the thread looks while requests are in flight.
SWEEP_EVERY: Final = 0.1

WAIT: Final = "wait"
PROBE: Final = "probe"
ABORT: Final = "abort"


class Seen(NamedTuple):
    """A request in flight as one sweep saw it."""

    waited: float  # seconds since the request went out
    opened_ago: float  # seconds since its flow connected
    flow: FlowState
    probing: bool  # the flow already carries the probe options


def _attempts(flow: FlowState) -> int:
    # Unanswered timer-driven tries to get our data to the peer: RTO
    # retransmissions, or, when nothing could even leave (a local firewall
    # drops it), the probe timer's retries.
    if flow.unacked:
        return flow.retransmits
    return flow.probes if flow.notsent else 0


def _stuck(seen: Seen, attempts: int, answer: float) -> bool:
    flow = seen.flow
    return _attempts(flow) >= attempts and flow.sent_ago >= answer


def inflight_action(me: Seen, siblings: Sequence[Seen], answer: float, ack_timeout: float) -> str:
    """What to do about a request waiting for its answer (pure).

    :param me: the request, as the sweep saw it.
    :param siblings: the other requests in flight to the same peer.
    :param answer: how long an answer may take (``answer_time``).
    :param ack_timeout: how long its bytes may stay unacknowledged at least.
    """
    flow = me.flow
    if flow.unacked or flow.notsent:
        if me.waited < ack_timeout or not _stuck(me, STUCK_RETRANSMITS, answer):
            return WAIT
        if _stuck(me, ALONE_RETRANSMITS, answer):
            return ABORT
        heard = any(s.opened_ago >= me.waited and s.flow.silent < me.waited / 2 for s in siblings)
        if heard:
            return WAIT  # the path works: this flow only lost a few segments
        if _stuck(me, UNHEARD_RETRANSMITS, answer) or any(_stuck(s, 1, answer) for s in siblings):
            return ABORT
        return WAIT
    if not me.probing:
        return PROBE if me.waited >= PROBE_AFTER and flow.silent >= PROBE_AFTER else WAIT
    # The n-th probe leaves n - 1 intervals after the first; the last one
    # gets answer_time to be answered before the verdict.
    deadline = PROBE_AFTER + (VERDICT_PROBES - 1) * 1.0 + answer
    if flow.probes >= VERDICT_PROBES and flow.silent >= deadline:
        return ABORT
    return WAIT


_lock = threading.Lock()
#: id(conn) -> (conn, monotonic time its request went out)
_inflight: Dict[int, Tuple[Any, float]] = {}
_thread: Optional[threading.Thread] = None
_fork_hook_registered = False
_busy = 0


def watch(conn: Any, now: float) -> None:
    """A replayable request on ``conn`` is waiting for its answer."""
    global _busy
    _inflight[id(conn)] = (conn, now)
    _busy = 1
    if _thread is None:
        _start()


def unwatch(conn: Any) -> None:
    """The answer came (or the request failed): stop watching ``conn``.

    If the watchdog took the entry first, or is probing its flow, it acts
    under ``_lock``: wait for it, so that nothing changes the socket once the
    request has moved on (``conn.azguard_probing`` then tells whether the
    probe options must come off).
    """
    if _inflight.pop(id(conn), None) is None or conn.azguard_probing:
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


def sweep(now: float) -> Dict[str, int]:
    """One look at every watched request (the thread calls it; tests step it).

    Nothing is read until some request has waited long enough to be judged;
    then every flow in flight is read, since the young ones are the evidence
    that the path to their peer still works.  Reading ``TCP_INFO`` happens
    outside the lock; acting re-checks that the entry is still the same
    request under it.
    """
    done = {PROBE: 0, ABORT: 0}
    entries = list(_inflight.items())
    if not any(now - since >= _look_after(conn) for _, (conn, since) in entries):
        return done
    seen: List[Tuple[int, Tuple[Any, float], Seen]] = []
    by_peer: Dict[Any, List[Seen]] = {}
    for key, entry in entries:
        conn, since = entry
        flow = conn.azguard_flow()
        if flow is None:
            continue
        opened = conn.azguard_opened_at
        one = Seen(
            now - since, math.inf if opened is None else now - opened, flow, conn.azguard_probing
        )
        seen.append((key, entry, one))
        if conn.azguard_peer is not None:
            by_peer.setdefault(conn.azguard_peer, []).append(one)
    for key, entry, me in seen:
        conn = entry[0]
        if me.waited < _look_after(conn):
            continue
        peer = conn.azguard_peer
        siblings = [s for s in by_peer.get(peer, ()) if s is not me] if peer is not None else []
        action = inflight_action(
            me, siblings, answer_time(me.flow.rtt, me.flow.rttvar), conn.azguard_config.ack_timeout
        )
        if action == WAIT:
            continue
        with _lock:
            if action == PROBE:
                if not conn.azguard_start_probing(partial(_is_watched, key, entry)):
                    continue  # answered meanwhile
            else:
                if _inflight.get(key) is not entry:
                    continue  # answered meanwhile: it owns its connection again
                del _inflight[key]
                conn.azguard_abort("blackhole")
        done[action] += 1
    return done


def _is_watched(key: int, entry: Tuple[Any, float]) -> bool:
    return _inflight.get(key) is entry


def _look_after(conn: Any) -> float:
    # Watched requests always have an ack_timeout (see _pool).
    ack_timeout: float = conn.azguard_config.ack_timeout
    return min(ack_timeout, PROBE_AFTER)


# Sweeps with nothing to do before the thread ends.  A busy pool is
# watched only during requests, so an empty sweep is common;
# ending at the first one would start a new thread every few sweeps, and
# Thread.start() blocks the request thread until the new one runs.
_QUIET_SWEEPS: Final = 50

_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep


def _start() -> None:
    global _thread, _fork_hook_registered
    if not _fork_hook_registered:
        # A forked child inherits the entries, and the lock perhaps held, but
        # not the thread: it resets all three.  Registered before the lock is
        # first taken, so that no fork can find it held with no reset to
        # follow (twice, from racing threads, is harmless).
        _fork.on_fork(after_fork_in_child)
        _fork_hook_registered = True
    with _lock:
        if _thread is not None:
            return
        _thread = threading.Thread(target=_run, name="requests-azguard-watchdog", daemon=True)
        _thread.start()


def _run() -> None:
    global _thread, _busy
    quiet = 0
    while True:
        _sleep(SWEEP_EVERY)
        if _inflight:
            sweep(_clock())
        with _lock:
            quiet = 0 if (_inflight or _busy) else quiet + 1
            _busy = 0
            if quiet >= _QUIET_SWEEPS:
                _thread = None
                break
    # A watch() racing the decision to end may have seen this thread still
    # set and started none: whatever it left gets a new one.
    if _inflight:
        _start()


def set_clock(clock: Callable[[], float]) -> None:
    """The monotonic clock the thread reads (``_runtime.testing`` swaps it)."""
    global _clock
    _clock = clock


def reset() -> None:
    """Forget every watched request (``_runtime.reset``, between tests): the
    thread, if running, ends after its quiet sweeps."""
    with _lock:
        _inflight.clear()


def after_fork_in_child() -> None:
    """Called by _fork in a child: no thread, a new lock, nothing watched
    (those requests are the parent's)."""
    global _thread, _lock
    _lock = threading.Lock()
    _thread = None
    _inflight.clear()
