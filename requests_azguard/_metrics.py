"""The ``azguard_*`` metric families: what every metrics back-end reports.

One table (attribute, kind, name, help, labels) that the Prometheus back-end
turns into collectors and the OpenTelemetry back-end into instruments, so the
two report the same series with the same labels.

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

from typing import Dict, Tuple

__all__ = [
    "BREAKER_STATES",
    "CONNECT_BUCKETS",
    "METRICS",
    "METRICS_KIND",
    "PER_HOST",
    "RTT_BUCKETS",
    "state_label",
]

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
PER_HOST = tuple(attr for attr, _, _, _, labels in METRICS if labels == ("host",))

#: attribute -> kind (``counter``, ``gauge`` or ``histogram``).
METRICS_KIND: Dict[str, str] = {attr: kind for attr, kind, *_ in METRICS}


def state_label(name: str) -> str:
    """pybreaker says ``half-open``; other code may say ``half_open``/``HALF_OPEN``."""
    text = str(name).strip().lower().replace("_", "-")
    return text if text in BREAKER_STATES else "other"
