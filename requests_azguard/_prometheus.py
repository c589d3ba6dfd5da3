"""Prometheus back-end for the instrumentation Protocol, and serving it from a config.

``prometheus_client`` is an optional extra (``pip install
requests-azguard[prometheus]``), imported only when a back-end is built.  The
collectors are created once per registry per process (the default registry
unless one is passed), so any number of adapters share them, and a program
that already exposes the default registry gets the ``azguard_*`` series there
too.

``enable_from_config(config)`` is what an adapter calls: when
``config.metrics_port`` is set it serves the default registry over HTTP on
``config.metrics_addr`` (loopback by default) and registers the back-end.  A
port already in use, or a missing ``prometheus_client``, is logged once and
never breaks the program making requests.  The series are those of
``_metrics``; the HTTP endpoint is ``_metrics_server``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional, Set, Tuple

from ._instrument import BoundedLabel, HostLabels, add_instrumentation
from ._metrics import (
    BREAKER_STATES,
    CONNECT_BUCKETS,
    METRICS,
    PER_HOST,
    RTT_BUCKETS,
    state_label,
)
from ._metrics_server import IDLE_TIMEOUT, MAX_THREADS, MetricsServer

if TYPE_CHECKING:
    from ._config import GuardConfig

# BREAKER_STATES, METRICS, IDLE_TIMEOUT, MAX_THREADS and MetricsServer are
# handed on from where they live, for the code that imports them from here.
__all__ = [
    "BREAKER_STATES",
    "IDLE_TIMEOUT",
    "MAX_THREADS",
    "METRICS",
    "MetricsServer",
    "PrometheusInstrumentation",
    "enable_from_config",
    "serve_metrics",
]

_log = logging.getLogger("requests_azguard")

_collectors_lock = threading.Lock()
_collectors: Dict[int, Tuple[Any, Dict[str, Any]]] = {}


def _make_collectors(registry: Any = None) -> Dict[str, Any]:
    """The collectors of ``METRICS`` in ``registry`` (default: the global one),
    created on first use and reused afterwards."""
    import prometheus_client as pc

    if registry is None:
        registry = pc.REGISTRY
    with _collectors_lock:
        held = _collectors.get(id(registry))
        if held is not None and held[0] is registry:
            return held[1]
        made: Dict[str, Any] = {}
        for attr, kind, name, doc, labels in METRICS:
            if kind == "counter":
                made[attr] = pc.Counter(name, doc, labels, registry=registry)
            elif kind == "gauge":
                # Multi-process mode: the worst state among live processes
                # (ignored without PROMETHEUS_MULTIPROC_DIR).
                made[attr] = pc.Gauge(
                    name, doc, labels, registry=registry, multiprocess_mode="livemax"
                )
            else:
                buckets = CONNECT_BUCKETS if attr == "connect_seconds" else RTT_BUCKETS
                made[attr] = pc.Histogram(name, doc, labels, buckets=buckets, registry=registry)
        # The registry is kept referenced so its id cannot be reused.
        _collectors[id(registry)] = (registry, made)
        return made


class PrometheusInstrumentation:
    """Instrumentation back-end writing the ``azguard_*`` series.

    :param registry: a ``prometheus_client.CollectorRegistry``; default global.
    :param hosts: allow-list of hosts that keep their own label (others are
        ``other``); without it the first ``max_hosts`` hosts seen keep theirs.
    """

    def __init__(
        self,
        registry: Any = None,
        *,
        hosts: Optional[Iterable[str]] = None,
        max_hosts: int = 50,
    ) -> None:
        self._m = _make_collectors(registry)
        self._labels = HostLabels(hosts, max_hosts)
        self._reason = BoundedLabel()
        self._errno = BoundedLabel()
        self._known: Set[str] = set()
        self._known_lock = threading.Lock()

    def _host(self, host: str) -> str:
        """The host's label; its first use creates its series at zero, so a
        dashboard shows a healthy host (breaker closed, no errors) instead of
        "no data"."""
        label = self._labels(host)
        if label not in self._known:
            with self._known_lock:
                if label not in self._known:
                    for attr in PER_HOST:
                        self._m[attr].labels(label)
                    self._m["breaker_state"].labels(label).set(0)
                    self._known.add(label)
        return label

    def connection_opened(self, host: str, connect_seconds: float) -> None:
        h = self._host(host)
        self._m["opened"].labels(h).inc()
        self._m["connect_seconds"].labels(h).observe(connect_seconds)

    def connection_reused(self, host: str) -> None:
        self._m["reused"].labels(self._host(host)).inc()

    def connection_evicted(self, host: str, reason: str) -> None:
        self._m["evicted"].labels(self._host(host), self._reason(reason)).inc()

    def error(self, host: str, errno_name: str) -> None:
        self._m["errors"].labels(self._host(host), self._errno(errno_name)).inc()

    def retry(self, host: str, reason: str) -> None:
        self._m["retries"].labels(self._host(host), self._reason(reason)).inc()

    def blackhole(self, host: str) -> None:
        self._m["blackholes"].labels(self._host(host)).inc()

    def condemned(self, host: str, connections: int) -> None:
        h = self._host(host)
        self._m["condemnations"].labels(h).inc()
        if connections > 0:
            self._m["condemned_connections"].labels(h).inc(connections)

    def breaker_transition(self, host: str, old: str, new: str) -> None:
        h = self._host(host)
        old_s, new_s = state_label(old), state_label(new)
        self._m["breaker_transitions"].labels(h, old_s, new_s).inc()
        value = BREAKER_STATES.get(new_s)
        if value is not None:
            self._m["breaker_state"].labels(h).set(value)

    def fallback_served(self, host: str) -> None:
        self._m["fallbacks"].labels(self._host(host)).inc()

    def tcp_info(self, host: str, rtt_seconds: float, grade: str) -> None:
        h = self._host(host)
        self._m["tcp_rtt_seconds"].labels(h).observe(rtt_seconds)
        self._m["tcp_health"].labels(h, self._reason(grade)).inc()


# Once per process: the endpoints, the back-end, the warnings already given.
_state_lock = threading.Lock()
_servers: Dict[Tuple[str, int], MetricsServer] = {}
_warned: Set[Tuple[str, int]] = set()
_backend: Optional[PrometheusInstrumentation] = None
_import_warned = False
_fork_hook = False


def _after_fork_in_child() -> None:
    """A forked child must not keep the parent's port (scrapes would land on
    a process that never answers, and a restarted parent could not bind)."""
    global _state_lock, _collectors_lock
    _state_lock = threading.Lock()
    _collectors_lock = threading.Lock()
    servers = list(_servers.values())
    _servers.clear()
    for server in servers:
        server._close_in_child()


def serve_metrics(addr: str, port: int) -> Optional[MetricsServer]:
    """Serve the default registry on ``addr:port`` once per process.

    Returns the server, or None (logged once per address) when the port
    cannot be bound.
    """
    global _fork_hook
    key = (addr, port)
    with _state_lock:
        # Binding is a local, non-blocking syscall: holding the lock across it
        # is what stops two adapters built at once from both trying the port.
        server = _servers.get(key)
        if server is not None:
            return server
        if key in _warned:
            return None
        if not _fork_hook and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook = True
        try:
            server = MetricsServer(addr, port)
        except OSError as exc:
            _warned.add(key)
            _log.warning(
                "azguard: cannot serve metrics on %s:%d (%s); requests are unaffected, "
                "metrics are not served on that port",
                addr,
                port,
                exc.strerror or exc,
                extra={"decision": "metrics_unavailable", "host": f"{addr}:{port}"},
            )
            return None
        _servers[key] = server
        return server


def enable_from_config(config: GuardConfig) -> Optional[PrometheusInstrumentation]:
    """Serve metrics and register the Prometheus back-end if ``config`` asks.

    Idempotent and cheap after the first call; never raises for an
    unavailable port or a missing ``prometheus_client``.
    """
    global _backend, _import_warned
    if config.otel:
        from ._otel import enable_from_config as enable_otel

        enable_otel(config)
    if config.metrics_port is None:
        return None
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        with _state_lock:
            first = not _import_warned
            _import_warned = True
        if first:
            _log.warning(
                "azguard: AZGUARD_METRICS_PORT is set but prometheus_client is not installed "
                "(pip install 'requests-azguard[prometheus]'); metrics are not served"
            )
        return None
    with _state_lock:
        if _backend is None:
            _backend = PrometheusInstrumentation()
        backend = _backend
    serve_metrics(config.metrics_addr, config.metrics_port)
    add_instrumentation(backend)  # idempotent
    return backend


def _reset_for_tests() -> None:
    """Stop every endpoint and forget warnings (collectors stay: they are
    process-wide by design)."""
    global _import_warned
    with _state_lock:
        servers = list(_servers.values())
        _servers.clear()
        _warned.clear()
        _import_warned = False
    for server in servers:
        server.close()
