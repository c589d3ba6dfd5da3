"""Instrumentation: what the guard reports, as a small Protocol.

Code paths call ``hooks()`` and report facts; the default back-end does
nothing, so an unobserved process pays one attribute lookup per event.
Back-ends (Prometheus, logging, a user's own such as OpenTelemetry) implement
the same Protocol and are added with ``add_instrumentation``.
"""

from __future__ import annotations

import threading
from typing import List, Optional, Protocol, Sequence, runtime_checkable

__all__ = [
    "Instrumentation",
    "NoopInstrumentation",
    "add_instrumentation",
    "hooks",
    "remove_instrumentation",
    "reset_instrumentation",
]


@runtime_checkable
class Instrumentation(Protocol):
    """Events the guard reports.  ``host`` is ``scheme://host:port``."""

    def connection_opened(self, host: str, connect_seconds: float) -> None: ...

    def connection_reused(self, host: str) -> None: ...

    def connection_evicted(self, host: str, reason: str) -> None: ...

    def error(self, host: str, errno_name: str) -> None: ...

    def retry(self, host: str, reason: str) -> None: ...

    def blackhole(self, host: str) -> None: ...

    def condemned(self, host: str, connections: int) -> None: ...

    def breaker_transition(self, host: str, old: str, new: str) -> None: ...

    def fallback_served(self, host: str) -> None: ...

    def tcp_info(self, host: str, rtt_seconds: float, grade: str) -> None: ...


class NoopInstrumentation:
    """The default: reports go nowhere."""

    def connection_opened(self, host: str, connect_seconds: float) -> None:
        pass

    def connection_reused(self, host: str) -> None:
        pass

    def connection_evicted(self, host: str, reason: str) -> None:
        pass

    def error(self, host: str, errno_name: str) -> None:
        pass

    def retry(self, host: str, reason: str) -> None:
        pass

    def blackhole(self, host: str) -> None:
        pass

    def condemned(self, host: str, connections: int) -> None:
        pass

    def breaker_transition(self, host: str, old: str, new: str) -> None:
        pass

    def fallback_served(self, host: str) -> None:
        pass

    def tcp_info(self, host: str, rtt_seconds: float, grade: str) -> None:
        pass


class _FanOut(NoopInstrumentation):
    """Forwards each event to every registered back-end."""

    def __init__(self, backends: Sequence[Instrumentation]) -> None:
        self._backends = tuple(backends)

    def __getattribute__(self, name: str) -> object:
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        backends = object.__getattribute__(self, "_backends")

        def call(*args: object) -> None:
            for backend in backends:
                getattr(backend, name)(*args)

        return call


_lock = threading.Lock()
_backends: List[Instrumentation] = []
_current: Instrumentation = NoopInstrumentation()


def hooks() -> Instrumentation:
    """The instrumentation to report to (a no-op unless back-ends are added)."""
    return _current


def _rebuild() -> None:
    global _current
    if not _backends:
        _current = NoopInstrumentation()
    elif len(_backends) == 1:
        _current = _backends[0]
    else:
        _current = _FanOut(_backends)


def add_instrumentation(backend: Instrumentation) -> None:
    if not isinstance(backend, Instrumentation):
        from ._errors import ConfigError

        raise ConfigError(
            "instrumentation", backend, "an object implementing requests_azguard.Instrumentation"
        )
    with _lock:
        if backend not in _backends:
            _backends.append(backend)
        _rebuild()


def remove_instrumentation(backend: Instrumentation) -> None:
    with _lock:
        if backend in _backends:
            _backends.remove(backend)
        _rebuild()


def reset_instrumentation(backends: Optional[Sequence[Instrumentation]] = None) -> None:
    """Tests: drop every back-end (or install exactly ``backends``)."""
    with _lock:
        _backends[:] = list(backends or ())
        _rebuild()
