"""OpenTelemetry back-end for the instrumentation Protocol.

The same series and labels as the Prometheus back-end, named after the
OpenTelemetry conventions (dotted names, no ``_total``/unit suffix, the unit
in the instrument's ``unit``): ``azguard_connections_opened_total`` is
``azguard.connections.opened``, ``azguard_connect_seconds`` is
``azguard.connect.duration`` in ``s``.  It only uses ``opentelemetry-api``
(the ``otel`` extra); the program's SDK and exporter decide where the values
go.  Enabled by ``AZGUARD_OTEL=1`` on an adapter's config, or with
``add_instrumentation(OpenTelemetryInstrumentation())``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Iterable, Iterator, Optional, Set, Tuple

from ._instrument import BoundedLabel, HostLabels, add_instrumentation
from ._metrics import BREAKER_STATES, METRICS, METRICS_KIND, PER_HOST, state_label

__all__ = ["OTEL_NAMES", "OpenTelemetryInstrumentation", "enable_from_config"]

_log = logging.getLogger("requests_azguard")

#: Prometheus attribute -> (OpenTelemetry instrument name, unit).
OTEL_NAMES: Dict[str, Tuple[str, str]] = {
    "opened": ("azguard.connections.opened", "{connection}"),
    "reused": ("azguard.connections.reused", "{connection}"),
    "evicted": ("azguard.connections.evicted", "{connection}"),
    "connect_seconds": ("azguard.connect.duration", "s"),
    "errors": ("azguard.errors", "{error}"),
    "retries": ("azguard.retries", "{retry}"),
    "blackholes": ("azguard.blackholes", "{flow}"),
    "condemnations": ("azguard.condemnations", "{condemnation}"),
    "condemned_connections": ("azguard.condemned_connections", "{connection}"),
    "breaker_state": ("azguard.breaker.state", "1"),
    "breaker_transitions": ("azguard.breaker.transitions", "{transition}"),
    "fallbacks": ("azguard.fallbacks", "{response}"),
    "tcp_rtt_seconds": ("azguard.tcp.rtt", "s"),
    "tcp_health": ("azguard.tcp.health", "{observation}"),
}


class OpenTelemetryInstrumentation:
    """Instrumentation back-end writing the ``azguard.*`` OpenTelemetry metrics.

    :param meter_provider: an ``opentelemetry.metrics.MeterProvider``;
        default the global one (``opentelemetry.metrics.get_meter_provider()``).
    :param hosts: allow-list of hosts that keep their own ``host`` attribute
        (others are ``other``); without it the first ``max_hosts`` hosts seen
        keep theirs.
    """

    def __init__(
        self,
        meter_provider: Any = None,
        *,
        hosts: Optional[Iterable[str]] = None,
        max_hosts: int = 50,
    ) -> None:
        from opentelemetry import metrics

        from ._version import __version__

        provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
        meter = provider.get_meter("requests_azguard", __version__)
        self._i: Dict[str, Any] = {}
        for attr, kind, _, doc, _labels in METRICS:
            name, unit = OTEL_NAMES[attr]
            if kind == "counter":
                self._i[attr] = meter.create_counter(name, unit=unit, description=doc)
            elif kind == "histogram":
                self._i[attr] = meter.create_histogram(name, unit=unit, description=doc)
            else:
                # An observable gauge works with every opentelemetry-api
                # release; the synchronous Gauge is recent.
                self._i[attr] = meter.create_observable_gauge(
                    name, callbacks=[self._observe_states], unit=unit, description=doc
                )
        self._states: Dict[str, int] = {}
        self._host_label = HostLabels(hosts, max_hosts)
        self._reason = BoundedLabel()
        self._errno = BoundedLabel()
        self._known: Set[str] = set()
        self._lock = threading.Lock()

    def _observe_states(self, options: Any) -> Iterator[Any]:
        from opentelemetry.metrics import Observation

        for host, value in list(self._states.items()):
            yield Observation(value, {"host": host})

    def _host(self, host: str) -> str:
        label = self._host_label(host)
        if label not in self._known:
            with self._lock:
                if label not in self._known:
                    attrs = {"host": label}
                    for attr in PER_HOST:
                        if attr in self._i and METRICS_KIND[attr] == "counter":
                            self._i[attr].add(0, attrs)
                    self._states.setdefault(label, 0)
                    self._known.add(label)
        return label

    def _add(self, attr: str, value: float = 1, **attrs: str) -> None:
        self._i[attr].add(value, attrs)

    def connection_opened(self, host: str, connect_seconds: float) -> None:
        h = self._host(host)
        self._add("opened", host=h)
        self._i["connect_seconds"].record(connect_seconds, {"host": h})

    def connection_reused(self, host: str) -> None:
        self._add("reused", host=self._host(host))

    def connection_evicted(self, host: str, reason: str) -> None:
        self._add("evicted", host=self._host(host), reason=self._reason(reason))

    def error(self, host: str, errno_name: str) -> None:
        self._add("errors", host=self._host(host), errno=self._errno(errno_name))

    def retry(self, host: str, reason: str) -> None:
        self._add("retries", host=self._host(host), reason=self._reason(reason))

    def blackhole(self, host: str) -> None:
        self._add("blackholes", host=self._host(host))

    def condemned(self, host: str, connections: int) -> None:
        h = self._host(host)
        self._add("condemnations", host=h)
        if connections > 0:
            self._add("condemned_connections", connections, host=h)

    def breaker_transition(self, host: str, old: str, new: str) -> None:
        h = self._host(host)
        old_s, new_s = state_label(old), state_label(new)
        self._add("breaker_transitions", host=h, from_state=old_s, to_state=new_s)
        value = BREAKER_STATES.get(new_s)
        if value is not None:
            self._states[h] = value

    def fallback_served(self, host: str) -> None:
        self._add("fallbacks", host=self._host(host))

    def tcp_info(self, host: str, rtt_seconds: float, grade: str) -> None:
        h = self._host(host)
        self._i["tcp_rtt_seconds"].record(rtt_seconds, {"host": h})
        self._add("tcp_health", host=h, grade=self._reason(grade))


_backend_lock = threading.Lock()
_backend: Optional[OpenTelemetryInstrumentation] = None
_import_warned = False


def enable_from_config(config: Any) -> Optional[OpenTelemetryInstrumentation]:
    """Register one process-wide OpenTelemetry back-end if ``config.otel``.

    A missing ``opentelemetry-api`` is logged once and never breaks requests.
    """
    global _backend, _import_warned
    if not getattr(config, "otel", False):
        return None
    with _backend_lock:
        if _backend is None:
            try:
                _backend = OpenTelemetryInstrumentation()
            except ImportError:
                if not _import_warned:
                    _import_warned = True
                    _log.warning(
                        "azguard: AZGUARD_OTEL is set but opentelemetry-api is not installed "
                        "(pip install 'requests-azguard[otel]'); metrics are not reported there"
                    )
                return None
        backend = _backend
    add_instrumentation(backend)  # idempotent
    return backend


def _reset_for_tests() -> None:
    global _backend, _import_warned
    with _backend_lock:
        _backend = None
        _import_warned = False
