"""The OpenTelemetry back-end, read back with the SDK's in-memory reader."""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, Iterator, Tuple

import pytest
import requests

pytest.importorskip("opentelemetry.sdk.metrics")
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from recorder import emit_every_event
from servers import HTTPTestServer

import requests_azguard as az
from requests_azguard import _otel
from requests_azguard._instrument import EVENTS, reset_instrumentation
from requests_azguard._prometheus import METRICS

Points = Dict[Tuple[str, FrozenSet[Tuple[str, Any]]], Any]


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    yield reader
    reset_instrumentation()
    _otel._reset_for_tests()


def points(reader: InMemoryMetricReader) -> Tuple[Points, Dict[str, Any]]:
    out: Points = {}
    meta: Dict[str, Any] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                meta[metric.name] = metric
                for p in metric.data.data_points:
                    value = getattr(p, "value", None)
                    if value is None:
                        value = (p.count, p.sum)
                    out[(metric.name, frozenset(p.attributes.items()))] = value
    return out, meta


def test_every_prometheus_series_has_an_otel_name() -> None:
    assert set(_otel.OTEL_NAMES) == {attr for attr, *_ in METRICS}
    for name, unit in _otel.OTEL_NAMES.values():
        assert name.startswith("azguard.") and not name.endswith("_total")
        assert "_seconds" not in name and unit


def test_same_series_and_labels_as_prometheus(reader: InMemoryMetricReader) -> None:
    backend = az.OpenTelemetryInstrumentation(MeterProvider(metric_readers=[reader]))
    assert isinstance(backend, az.Instrumentation)
    h = "http://a:80"
    emit_every_event(backend, h)
    got, meta = points(reader)
    host = ("host", h)
    assert got[("azguard.connections.opened", frozenset({host}))] == 1
    assert got[("azguard.connections.reused", frozenset({host}))] == 1
    assert got[("azguard.connections.evicted", frozenset({host, ("reason", "peer_closed")}))] == 1
    assert got[("azguard.errors", frozenset({host, ("errno", "ECONNRESET")}))] == 1
    assert got[("azguard.retries", frozenset({host, ("reason", "ECONNRESET")}))] == 1
    assert got[("azguard.blackholes", frozenset({host}))] == 1
    assert got[("azguard.condemnations", frozenset({host}))] == 1
    assert got[("azguard.condemned_connections", frozenset({host}))] == 3
    transition = frozenset({host, ("from_state", "closed"), ("to_state", "open")})
    assert got[("azguard.breaker.transitions", transition)] == 1
    assert got[("azguard.breaker.state", frozenset({host}))] == 2
    assert got[("azguard.fallbacks", frozenset({host}))] == 1
    assert got[("azguard.connect.duration", frozenset({host}))] == (1, 0.003)
    assert got[("azguard.tcp.rtt", frozenset({host}))] == (1, 0.0004)
    assert got[("azguard.tcp.health", frozenset({host, ("grade", "healthy")}))] == 1
    assert meta["azguard.connect.duration"].unit == "s"
    # Every event of the Protocol landed somewhere.
    assert len({name for name, _ in got}) == len(_otel.OTEL_NAMES) == len(EVENTS) + 4


def test_series_exist_from_first_use(reader: InMemoryMetricReader) -> None:
    backend = az.OpenTelemetryInstrumentation(MeterProvider(metric_readers=[reader]))
    backend.connection_reused("http://b:80")
    got, _ = points(reader)
    host = frozenset({("host", "http://b:80")})
    assert got[("azguard.breaker.state", host)] == 0
    assert got[("azguard.blackholes", host)] == 0
    assert got[("azguard.fallbacks", host)] == 0


def test_host_labels_are_bounded(reader: InMemoryMetricReader) -> None:
    backend = az.OpenTelemetryInstrumentation(
        MeterProvider(metric_readers=[reader]), max_hosts=2
    )
    for i in range(10):
        backend.connection_reused(f"http://h{i}:80")
    got, _ = points(reader)
    hosts = {dict(attrs)["host"] for name, attrs in got if name == "azguard.connections.reused"}
    assert hosts == {"http://h0:80", "http://h1:80", "other"}


def test_enabled_by_the_config_variable(
    reader: InMemoryMetricReader, server: HTTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = MeterProvider(metric_readers=[reader])
    from opentelemetry import metrics

    monkeypatch.setattr(metrics, "get_meter_provider", lambda: provider)
    cfg = az.GuardConfig.from_env({"AZGUARD_OTEL": "1"})
    assert cfg.otel is True
    session = az.mount(requests.Session(), cfg)
    for _ in range(2):
        assert session.get(server.url, timeout=10).status_code == 200
    session.close()
    got, _ = points(reader)
    host = frozenset({("host", server.url.rstrip("/"))})
    assert got[("azguard.connections.opened", host)] == 1
    assert got[("azguard.connections.reused", host)] == 1


def test_without_the_variable_nothing_is_registered(reader: InMemoryMetricReader) -> None:
    az.mount(requests.Session(), az.GuardConfig())
    assert _otel._backend is None
