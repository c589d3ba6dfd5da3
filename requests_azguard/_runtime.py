"""The guard's process-wide state, known in one place: one reset, one test context.

The state itself stays in the modules that read it on the request path (the
breaker registry, condemnations, the DNS cache, the in-flight watchdog's
registry, instrumentation back-ends, policy overrides, metrics and tracing
back-ends, the probe-option cache), because an indirection there costs on
every request.  What must never be scattered is knowing all of it: this module
is the one list, so that a test, a forked child (``_fork``) and a program that
wants a clean slate all reset the same things.

The clocks are injectable for tests: the breakers run on a wall clock (their
open state is shared through Redis, where only wall time means the same on
every machine) and the watchdog on a monotonic one; ``testing()`` swaps both.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator, Optional

__all__ = ["reset", "testing"]


def reset() -> None:
    """Put every piece of the guard's process state back as it was at import.

    Installed patches (``install()``) are left alone: they belong to the
    program, which undoes them with ``uninstall()``.
    """
    from . import _dns, _otel, _prometheus, _watchdog
    from ._breaker_registry import reset_breakers
    from ._condemn import reset_condemnations
    from ._instrument import reset_instrumentation
    from ._keepalive import reset_probes
    from ._policy import reset_decisions

    reset_breakers()
    reset_condemnations()
    reset_instrumentation()
    reset_decisions()
    reset_probes()
    _dns.default_cache.clear()
    _prometheus._reset_for_tests()
    _otel._reset_for_tests()
    _watchdog.reset()


@contextlib.contextmanager
def testing(
    *,
    wall_clock: Optional[Callable[[], float]] = None,
    monotonic: Optional[Callable[[], float]] = None,
) -> Iterator[None]:
    """Tests: a clean process state inside, and again after.

    :param wall_clock: the breakers' clock (``time.time`` otherwise).
    :param monotonic: the in-flight watchdog's clock (``time.monotonic``
        otherwise); with a fake one, step the watchdog with
        ``_watchdog.sweep(now)`` instead of sleeping.
    """
    from . import _watchdog
    from ._breaker_registry import reset_breakers

    reset()
    if wall_clock is not None:
        reset_breakers(clock=wall_clock)
    _watchdog.set_clock(monotonic or time.monotonic)
    try:
        yield
    finally:
        _watchdog.set_clock(time.monotonic)
        reset()
