"""Prometheus back-end for the instrumentation Protocol, and the metrics endpoint.

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
never breaks the program making requests.

Exported series (``host`` labels are bounded by ``HostLabels``; ``reason``
and ``errno`` by ``BoundedLabel``):

=======================================  =========  ============================
name                                     type       labels
=======================================  =========  ============================
azguard_connections_opened_total         counter    host
azguard_connections_reused_total         counter    host
azguard_connections_evicted_total        counter    host, reason
azguard_connect_seconds                  histogram  host
azguard_errors_total                     counter    host, errno
azguard_retries_total                    counter    host, reason
azguard_blackholes_total                 counter    host
azguard_condemnations_total              counter    host
azguard_condemned_connections_total      counter    host
azguard_breaker_state                    gauge      host (0 closed, 1 half-open, 2 open)
azguard_breaker_transitions_total        counter    host, from_state, to_state
azguard_fallbacks_total                  counter    host
azguard_tcp_rtt_seconds                  histogram  host
azguard_tcp_health_total                 counter    host, grade
=======================================  =========  ============================
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional, Set, Tuple

from ._instrument import BoundedLabel, HostLabels, add_instrumentation

if TYPE_CHECKING:
    from ._config import GuardConfig

__all__ = [
    "BREAKER_STATES",
    "METRICS",
    "MetricsServer",
    "PrometheusInstrumentation",
    "enable_from_config",
    "serve_metrics",
]

_log = logging.getLogger("requests_azguard")

#: Values of the ``azguard_breaker_state`` gauge.
BREAKER_STATES: Dict[str, int] = {"closed": 0, "half-open": 1, "open": 2}

CONNECT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RTT_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
)

# (attribute, kind, name, help, labels)
METRICS: Tuple[Tuple[str, str, str, str, Tuple[str, ...]], ...] = (
    ("opened", "counter", "azguard_connections_opened", "New connections opened", ("host",)),
    (
        "reused",
        "counter",
        "azguard_connections_reused",
        "Pooled connections reused after validation",
        ("host",),
    ),
    (
        "evicted",
        "counter",
        "azguard_connections_evicted",
        "Pooled connections closed by the guard, by reason",
        ("host", "reason"),
    ),
    (
        "connect_seconds",
        "histogram",
        "azguard_connect_seconds",
        "Time to open a connection (TCP, and TLS for https)",
        ("host",),
    ),
    ("errors", "counter", "azguard_errors", "Low-level failures by errno name", ("host", "errno")),
    (
        "retries",
        "counter",
        "azguard_retries",
        "Requests retried on a fresh connection, by reason",
        ("host", "reason"),
    ),
    (
        "blackholes",
        "counter",
        "azguard_blackholes",
        "Flows declared black-holed (request bytes unacknowledged past ack_timeout)",
        ("host",),
    ),
    (
        "condemnations",
        "counter",
        "azguard_condemnations",
        "Times a peer's idle pooled connections were condemned",
        ("host",),
    ),
    (
        "condemned_connections",
        "counter",
        "azguard_condemned_connections",
        "Idle pooled connections condemned with a dead sibling",
        ("host",),
    ),
    (
        "breaker_state",
        "gauge",
        "azguard_breaker_state",
        "Circuit breaker state: 0 closed, 1 half-open, 2 open",
        ("host",),
    ),
    (
        "breaker_transitions",
        "counter",
        "azguard_breaker_transitions",
        "Circuit breaker state changes",
        ("host", "from_state", "to_state"),
    ),
    (
        "fallbacks",
        "counter",
        "azguard_fallbacks",
        "Fallback responses served instead of an error",
        ("host",),
    ),
    (
        "tcp_rtt_seconds",
        "histogram",
        "azguard_tcp_rtt_seconds",
        "Smoothed RTT from Linux TCP_INFO",
        ("host",),
    ),
    (
        "tcp_health",
        "counter",
        "azguard_tcp_health",
        "TCP_INFO health grades observed",
        ("host", "grade"),
    ),
)

# Series labelled by host alone, created at zero when a host is first seen.
_PER_HOST = tuple(attr for attr, _, _, _, labels in METRICS if labels == ("host",))

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


def multiprocess_dir() -> Optional[str]:
    """prometheus_client's multiprocess directory, if this process uses one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _scrape_registry() -> Any:
    """What the endpoint serves: the default registry, or in multiprocess mode
    (``PROMETHEUS_MULTIPROC_DIR``) every process's values from that directory,
    collected afresh per scrape as prometheus_client prescribes."""
    import prometheus_client as pc

    if not multiprocess_dir():
        return pc.REGISTRY
    from prometheus_client import multiprocess

    registry = pc.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


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
                    for attr in _PER_HOST:
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
        old_s, new_s = _state(old), _state(new)
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


def _state(name: str) -> str:
    """pybreaker says ``half-open``; other code may say ``half_open``/``HALF_OPEN``."""
    text = str(name).strip().lower().replace("_", "-")
    return text if text in BREAKER_STATES else "other"


# --------------------------------------------------------------------------
# The HTTP endpoint.


#: Seconds a metrics client may stay silent before its connection is closed.
IDLE_TIMEOUT = 10.0
#: Connections served at once; more are answered 503 and closed at once, so
#: idle or slow clients can never pin more than this many threads.
MAX_THREADS = 8


class MetricsServer:
    """A running metrics endpoint (``/metrics``, also ``/``) in a daemon thread.

    Each client connection is served in its own thread, at most
    ``max_threads`` at once; a client silent for ``idle_timeout`` seconds is
    disconnected.  The listening socket is closed in forked children, so the
    port is free once this process exits even if a child lives on.
    """

    def __init__(
        self,
        addr: str,
        port: int,
        registry: Any = None,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_threads: int = MAX_THREADS,
    ) -> None:
        # Imported here so that importing this module (as the adapter does) stays cheap.
        import http.server
        import ipaddress

        import prometheus_client as pc

        reg = registry

        class Handler(http.server.BaseHTTPRequestHandler):
            # StreamRequestHandler applies this to the connection's socket:
            # a client that sends nothing (or stops reading) is dropped.
            timeout = idle_timeout

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/", "/metrics"):
                    self.send_error(404)
                    return
                body = pc.generate_latest(reg if reg is not None else _scrape_registry())
                self.send_response(200)
                self.send_header("Content-Type", pc.CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes are not the program's business

        family = socket.AF_INET
        try:
            if ipaddress.ip_address(addr).version == 6:
                family = socket.AF_INET6
        except ValueError:
            pass  # "localhost"

        slots = threading.BoundedSemaphore(max_threads)
        owner = self

        class Server(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            # Threads are bounded by ``slots``; socketserver need not keep
            # a list of them to join (it would grow with every scrape on 3.7+).
            block_on_close = False
            # socketserver's default backlog of 5 drops SYNs under a burst
            # of clients (each then waits a second to retry).
            request_queue_size = 128

            def process_request(self, request: Any, client_address: Any) -> None:
                if not slots.acquire(blocking=False):
                    _refuse(request)
                    self.shutdown_request(request)
                    return
                owner._open.add(request)
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    owner._open.discard(request)
                    slots.release()
                    raise

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    owner._open.discard(request)
                    slots.release()

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out or went away is not an error

        # Sockets of connections being served, closed in a forked child.
        self._open: Set[Any] = set()
        self.httpd = Server((addr, port), Handler)
        self.addr = addr
        self.port = self.httpd.server_address[1]
        self.max_threads = max_threads
        self.idle_timeout = idle_timeout
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="azguard-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def _close_in_child(self) -> None:
        """After fork: the serving thread is gone; release the child's copies
        of the listening and client sockets without touching the parent's
        (close() of a duplicated descriptor sends nothing on the wire)."""
        for sock in [self.httpd.socket, *list(self._open)]:
            try:
                sock.close()
            except OSError:
                pass
        self._open.clear()


def _refuse(request: Any) -> None:
    """Tell a client over the thread limit to come back, without blocking."""
    try:
        request.setblocking(False)
        request.send(
            b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    except OSError:
        pass


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
