"""The in-flight watchdog's options, and relaxing them on idle connections.

While a replayable request is in flight its socket carries tight options (a
short ``TCP_USER_TIMEOUT`` and 1 s keepalive probes, see
``_keepalive.inflight_options``).  Putting the generous options back on every
return to the pool costs setsockopt calls that a busy pool undoes at once with
the next request: measured at about 14 µs of CPU per request in a loop, more
than every other part of the guard together.  So a connection goes back to
the pool still tight and is relaxed later:

* by the next request that must not run with tight options (one that cannot
  be replayed), before its first byte, or
* by the janitor thread once the connection has sat idle for ``RELAX_AFTER``,
  before the tight keepalive idle (1 s) would send its first probe.

The janitor is one daemon thread, started when the first tight connection is
parked and gone again after a few quiet seconds with none.  Parking and
claiming are single dict operations, atomic under the GIL, so requests take
no lock; the janitor holds its lock while it restores options (local
syscalls, never network I/O), and a request that finds its connection taken
by the janitor waits on that lock, so it sees the connection relaxed.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Final, List, Optional

__all__ = ["RELAX_AFTER", "claim", "park", "pending", "relax_all", "relax_due"]

#: Idle seconds after which a parked tight connection is relaxed: half the
#: shortest tight keepalive idle (1 s), so that no probe goes out meanwhile.
RELAX_AFTER: Final = 0.5

_lock = threading.Lock()
_parked: Dict[int, Any] = {}
_thread: Optional[threading.Thread] = None
_fork_hook_registered = False


def park(conn: Any) -> None:
    """``conn`` went back to the pool with tight options."""
    global _parks
    # One dict store and one flag, each atomic under the GIL: the request path
    # takes no lock, which several threads would contend for on every request.
    _parked[id(conn)] = conn
    _parks = 1
    if _thread is None:
        _start_janitor()


def _start_janitor() -> None:
    global _thread, _fork_hook_registered
    with _lock:
        if _thread is not None:
            return
        if not _fork_hook_registered:
            # A forked child has the parked connections but not the thread
            # (_fork calls after_fork_in_child; registered here too for a
            # connection parked by a pool _fork never saw).
            from . import _fork

            _fork.on_fork(after_fork_in_child)
            _fork_hook_registered = True
        _thread = threading.Thread(target=_run, name="requests-azguard-relax", daemon=True)
        _thread.start()


def claim(conn: Any) -> None:
    """A request took ``conn`` from the pool: the janitor must not touch it now.

    Whoever pops the connection from ``_parked`` owns it (dict.pop is atomic
    under the GIL).  If the janitor popped it first, it is relaxing it under
    ``_lock``: waiting on the lock means the request then sees it relaxed,
    never relaxed under it mid-flight.
    """
    if _parked.pop(id(conn), None) is None:
        with _lock:
            pass


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
    """Relax every parked connection now, as the janitor would once they have
    been idle long enough (``azguard doctor``, tests)."""
    return relax_due(float("inf"))


# Sweeps with nothing parked before the thread ends.  A busy pool is parked
# only between requests, so an empty sweep is common; ending at the first one
# would start a new thread every few sweeps, and Thread.start() blocks the
# request thread until the new one runs.
_QUIET_SWEEPS: Final = 20
_parks = 0


def _run() -> None:
    global _thread, _parks
    quiet = 0
    while True:
        time.sleep(RELAX_AFTER / 2)
        relax_due(time.monotonic())
        with _lock:
            quiet = 0 if (_parked or _parks) else quiet + 1
            _parks = 0
            if quiet >= _QUIET_SWEEPS:
                _thread = None
                break
    # A park() racing the decision to end may have seen this thread still
    # set and started none: whatever it parked gets a new janitor.
    if _parked:
        _start_janitor()


def after_fork_in_child() -> None:
    """Called by _fork in a child: no thread, a new lock, nothing parked (the
    parked connections are the parent's; the child's pools forget them)."""
    _forget_thread()
    _parked.clear()


def _forget_thread() -> None:
    # The parent's thread did not survive the fork; the next park() starts one.
    # Connections parked before the fork share their sockets with the parent,
    # whose janitor relaxes them.
    global _thread, _lock
    _lock = threading.Lock()
    _thread = None
