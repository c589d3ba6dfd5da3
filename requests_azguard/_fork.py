"""What a forked child must not inherit: pooled connections, state, locks.

A child made by ``os.fork()`` (gunicorn and celery workers, multiprocessing's
default on Linux) starts with a copy of the parent's pools, and so with the
parent's pooled sockets: parent and child would then write requests into the
same TCP flow and read each other's responses.  It also inherits every lock
in whatever state another thread of the parent held it, and a lock held at
fork is held forever in the child.

So, once, in the child (``os.register_at_fork(after_in_child=...)``):

* every guarded pool forgets its idle connections **without closing them**:
  the parent still owns those flows, and a shutdown() from the child would
  end them for the parent too.  The child's references go; the parent's
  sockets stay open in the parent (closing a copy of a descriptor, which is
  all the garbage collector does here, never touches the flow);
* per-process state starts empty: the breaker registry (same options, no
  breakers, no Redis client), condemnations, the DNS cache, the watchdog's
  registry of requests in flight and its thread;
* every lock the package owns is a new one.

Registration happens when the first guarded pool is built (importing the
package has no side effects).  Pools and managers are found through weak
sets filled at creation, so the request path pays nothing.  A module that
uses this one (the watchdog, for its thread and requests in flight) registers
its own reset with :func:`on_fork` instead of being imported from here.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from typing import Any, Callable, List

__all__ = ["after_fork_in_child", "on_fork", "track_manager", "track_pool"]

_log = logging.getLogger("requests_azguard")

_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_managers: weakref.WeakSet[Any] = weakref.WeakSet()
_callbacks: List[Callable[[], None]] = []
_registered = False
_register_lock = threading.Lock()


def _ensure_registered() -> None:
    global _registered
    if _registered:
        return
    with _register_lock:
        if not _registered and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=after_fork_in_child)
        _registered = True


def track_pool(pool: Any) -> None:
    """A guarded urllib3 pool was built (called once per pool, not per request)."""
    _pools.add(pool)
    _ensure_registered()


def track_manager(manager: Any) -> None:
    """A guarded pool manager was built: its pool container has a lock."""
    _managers.add(manager)
    _ensure_registered()


def on_fork(callback: Callable[[], None]) -> None:
    """Run ``callback`` in every forked child (after the built-in resets)."""
    if callback not in _callbacks:
        _callbacks.append(callback)
    _ensure_registered()


def _reset_pool(pool: Any) -> None:
    # Only references are dropped: no conn.close(), no shutdown().  urllib3's
    # queue is replaced rather than drained, since its mutex may have been
    # held by a parent thread at fork time.
    after_fork = getattr(pool, "azguard_after_fork", None)
    if after_fork is not None:
        after_fork()
    queue = getattr(pool, "pool", None)
    if queue is None:  # a closed pool stays closed
        return
    maxsize = queue.maxsize
    fresh = pool.QueueCls(maxsize)
    for _ in range(maxsize):
        fresh.put(None)
    pool.pool = fresh
    # The connections the parent's threads had checked out never come back
    # here; the count of open connections starts again too.
    if hasattr(pool, "num_connections"):
        pool.num_connections = 0


def _reset_manager(manager: Any) -> None:
    pools = getattr(manager, "pools", None)
    if pools is not None and hasattr(pools, "lock"):
        pools.lock = threading.RLock()


def _reset_breakers() -> None:
    from . import _breaker_registry

    old = _breaker_registry._registry
    _breaker_registry._registry_lock = threading.Lock()
    if old is None:
        return
    # Whatever remembered one of the parent's breakers looks its key up again.
    old.abandon()
    # Same limits, nothing else: the parent's breakers, Redis client
    # (redis-py never shuts down a connection made by another pid) and
    # locks stay with the parent.
    _breaker_registry._registry = _breaker_registry.BreakerRegistry(
        clock=old.clock,
        max_hosts=old.max_hosts,
        half_open_trials=old.half_open_trials,
        sync_interval=old.sync_interval,
        redis_socket_timeout=old.redis_socket_timeout,
        reattach_interval=old.reattach_interval,
    )


def _reset_modules() -> None:
    from . import _condemn, _dns, _instrument, _keepalive, _policy

    _condemn._lock = threading.Lock()
    _condemn._condemned.clear()
    _dns.default_cache.after_fork()
    _instrument.after_fork_in_child()
    _keepalive._probe_lock = threading.Lock()
    _policy._lock = threading.Lock()


def after_fork_in_child() -> None:
    """Reset what a child must not share with its parent (see the module doc)."""
    global _register_lock
    _register_lock = threading.Lock()
    steps: List[Callable[[], None]] = [_reset_breakers, _reset_modules]
    steps.extend(functools.partial(_reset_pool, pool) for pool in list(_pools))
    steps.extend(functools.partial(_reset_manager, m) for m in list(_managers))
    steps.extend(_callbacks)
    for step in steps:
        try:
            step()
        except Exception:  # a child must start even if one reset fails
            _log.exception("requests_azguard: resetting state after fork failed")
