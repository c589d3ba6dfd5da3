"""The one instrumentation back-end the tests listen with: it only records.

The dispatcher swallows whatever a back-end raises (a metrics bug must never
break a request), so an ``assert`` inside a hook cannot fail a test.  Tests
register a ``Recorder`` (the ``recorder`` fixture in conftest does), make
their requests, and assert on what it saw afterwards, outside the dispatcher.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any, Callable, List, Tuple

from requests_azguard._instrument import EVENTS, Instrumentation, NoopInstrumentation

__all__ = ["Recorder", "emit_every_event", "every_event"]

Event = Tuple[str, Tuple[Any, ...]]


def _recording(event: str) -> Callable[..., None]:
    def record(self: Recorder, *args: Any) -> None:
        with self.lock:
            self.events.append((event, args))

    record.__name__ = event
    return record


class Recorder(NoopInstrumentation):
    """Every report, in order, as ``(event, args)``, from whichever thread made it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: List[Event] = []

    def of(self, event: str) -> List[Tuple[Any, ...]]:
        """The arguments of each report of ``event``."""
        with self.lock:
            return [args for name, args in self.events if name == event]

    def values(self, event: str, parameter: str) -> List[Any]:
        """One argument, named as in the Protocol, of each report of ``event``."""
        params = list(inspect.signature(getattr(Instrumentation, event)).parameters)
        index = params.index(parameter) - 1  # past ``self``
        return [args[index] for args in self.of(event)]


for _event in EVENTS:
    setattr(Recorder, _event, _recording(_event))


def every_event(host: str) -> List[Event]:
    """One report of each event of the Protocol, with plausible arguments."""
    return [
        ("connection_opened", (host, 0.003)),
        ("connection_reused", (host,)),
        ("connection_evicted", (host, "peer_closed")),
        ("error", (host, "ECONNRESET")),
        ("retry", (host, "ECONNRESET")),
        ("blackhole", (host,)),
        ("condemned", (host, 3)),
        ("breaker_transition", (host, "closed", "open")),
        ("fallback_served", (host,)),
        ("tcp_info", (host, 0.0004, "healthy")),
    ]


def emit_every_event(backend: Instrumentation, host: str) -> None:
    for event, args in every_event(host):
        getattr(backend, event)(*args)
