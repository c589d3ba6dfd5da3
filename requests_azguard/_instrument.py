"""Instrumentation: what the guard reports, as a small Protocol.

Code paths call ``hooks()`` and report facts; the default back-end does
nothing, so an unobserved process pays one attribute lookup per event.
Back-ends (Prometheus in ``_prometheus``, logging in ``_log``, a user's own
such as OpenTelemetry) implement the same Protocol and are added with
``add_instrumentation``; a back-end that raises is logged once and never
breaks the request that reported the event.  ``HostLabels`` bounds the host
label values a back-end hands to a metrics system.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Protocol,
    Sequence,
    Set,
    Tuple,
    cast,
    runtime_checkable,
)

__all__ = [
    "EVENTS",
    "BoundedLabel",
    "HostLabels",
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


#: The event names, in the Protocol's order: the one list the dispatcher's
#: forwarding (and any back-end built by introspection) is generated from.
EVENTS: Tuple[str, ...] = tuple(name for name in vars(Instrumentation) if not name.startswith("_"))


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


class _Dispatch:
    """Forwards each event to every registered back-end.

    A back-end that raises never breaks the request that reported the event:
    the failure is logged once per back-end and event, then ignored.  Its
    event methods are generated from ``EVENTS`` (below), so a new event is
    written once in the Protocol, not again here.
    """

    def __init__(self, backends: Sequence[Instrumentation]) -> None:
        self._backends = tuple(backends)
        self._failed: Set[Tuple[int, str]] = set()

    def _emit(self, name: str, *args: object) -> None:
        for backend in self._backends:
            try:
                getattr(backend, name)(*args)
            except Exception:
                key = (id(backend), name)
                if key not in self._failed:
                    self._failed.add(key)
                    logging.getLogger("requests_azguard").warning(
                        "instrumentation back-end %r failed in %s(); further failures "
                        "of this event are ignored",
                        backend,
                        name,
                        exc_info=True,
                    )


def _forwarder(event: str) -> Callable[..., None]:
    """The dispatcher's method for ``event``: hand the report to ``_emit``."""

    def forward(self: _Dispatch, *args: object) -> None:
        self._emit(event, *args)

    forward.__name__ = event
    forward.__qualname__ = f"_Dispatch.{event}"
    return forward


for _event in EVENTS:
    setattr(_Dispatch, _event, _forwarder(_event))


class HostLabels:
    """Bounded label values for hosts, so metric cardinality cannot grow
    without limit when a program talks to many hosts.

    With ``allow`` (an iterable of ``scheme://host:port`` strings, or bare
    ``host:port`` / ``host``), only those hosts keep their own label; every
    other host is ``"other"``.  Without it, the first ``max_hosts`` distinct
    hosts seen keep theirs: labels never move from one series to another
    once given, which "top-N by traffic" could not promise.
    """

    OTHER = "other"

    def __init__(self, allow: Optional[Iterable[str]] = None, max_hosts: int = 50) -> None:
        if isinstance(allow, str):
            from ._errors import ConfigError

            raise ConfigError("allow", allow, "an iterable of host strings, not one string")
        if not isinstance(max_hosts, int) or isinstance(max_hosts, bool) or max_hosts < 0:
            from ._errors import ConfigError

            raise ConfigError("max_hosts", max_hosts, "a whole number >= 0")
        self._allow = None if allow is None else frozenset(allow)
        self._max = max_hosts
        self._seen: Dict[str, str] = {}
        self._lock = threading.Lock()
        _lock_owners.add(self)

    def __call__(self, host: str) -> str:
        label = self._seen.get(host)
        if label is not None:
            return label
        with self._lock:
            label = self._seen.get(host)
            if label is None:
                label = self._decide(host)
                # Remember "other" decisions too, but not without bound.
                if label != self.OTHER or len(self._seen) < 4 * self._max + 256:
                    self._seen[host] = label
            return label

    def _decide(self, host: str) -> str:
        if self._allow is not None:
            bare = host.split("://", 1)[-1]
            match = _PORT_SUFFIX.match(bare)
            name = match.group(1) if match else bare
            if host in self._allow or bare in self._allow or name in self._allow:
                return host
            return self.OTHER
        own = sum(1 for v in self._seen.values() if v != self.OTHER)
        return host if own < self._max else self.OTHER


class BoundedLabel:
    """Bounded label values for free-form strings (reasons, errno names): the
    first ``max_values`` distinct well-formed values pass, the rest are
    ``"other"``."""

    def __init__(self, max_values: int = 64) -> None:
        self._max = max_values
        self._seen: Set[str] = set()
        self._lock = threading.Lock()
        _lock_owners.add(self)

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            return "other"
        with self._lock:
            if len(self._seen) >= self._max:
                return "other"
            self._seen.add(value)
        return value


_PORT_SUFFIX = re.compile(r"^(.*):([0-9]+)$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


_lock = threading.Lock()
_backends: List[Instrumentation] = []
# Label caches, whose locks a forked child must not inherit held.
_lock_owners: weakref.WeakSet[Any] = weakref.WeakSet()


def after_fork_in_child() -> None:
    """Called by _fork in a child: new locks (labels already decided stay)."""
    global _lock
    _lock = threading.Lock()
    for owner in list(_lock_owners):
        owner._lock = threading.Lock()


_current: Instrumentation = NoopInstrumentation()


def hooks() -> Instrumentation:
    """The instrumentation to report to (a no-op unless back-ends are added)."""
    return _current


def _rebuild() -> None:
    global _current
    if not _backends:
        _current = NoopInstrumentation()
        return
    # The cast stands for what mypy cannot see: the forwarding is generated
    # from EVENTS (tests check the dispatcher satisfies the Protocol).
    _current = cast(Instrumentation, _Dispatch(_backends))


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
