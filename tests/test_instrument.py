"""The instrumentation Protocol, its dispatch, bounded labels and the log helpers."""

from __future__ import annotations

import inspect
import logging

import pytest
import requests
from recorder import Recorder, emit_every_event, every_event
from servers import HTTPTestServer

import requests_azguard
from requests_azguard import ConfigError
from requests_azguard._instrument import (
    EVENTS,
    BoundedLabel,
    HostLabels,
    Instrumentation,
    NoopInstrumentation,
    add_instrumentation,
    hooks,
    remove_instrumentation,
    reset_instrumentation,
)
from requests_azguard._log import LoggingInstrumentation, format_peer, log_decision


class Exploding(NoopInstrumentation):
    def connection_evicted(self, host: str, reason: str) -> None:
        raise RuntimeError("backend bug")


def test_events_are_the_protocol_methods() -> None:
    protocol = {
        name
        for name, _ in inspect.getmembers(Instrumentation, inspect.isfunction)
        if not name.startswith("_")
    }
    assert set(EVENTS) == protocol
    assert "connection_evicted" in EVENTS and "breaker_transition" in EVENTS


def test_default_is_a_noop() -> None:
    assert isinstance(hooks(), NoopInstrumentation)
    hooks().connection_evicted("http://h:80", "idle")  # nothing to observe, nothing raised


def test_events_reach_every_backend_and_removal_stops_them() -> None:
    a, b = Recorder(), Recorder()
    add_instrumentation(a)
    add_instrumentation(b)
    add_instrumentation(a)  # idempotent
    hooks().connection_evicted("http://h:80", "idle")
    hooks().breaker_transition("http://h:80", "closed", "open")
    expected = [
        ("connection_evicted", ("http://h:80", "idle")),
        ("breaker_transition", ("http://h:80", "closed", "open")),
    ]
    assert a.events == expected and b.events == expected
    remove_instrumentation(a)
    hooks().connection_evicted("http://h:80", "age")
    assert len(a.events) == 2 and len(b.events) == 3
    reset_instrumentation()
    assert isinstance(hooks(), NoopInstrumentation)


def test_failing_backend_never_breaks_the_caller_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = Recorder()
    reset_instrumentation([Exploding(), good])
    with caplog.at_level(logging.WARNING, logger="requests_azguard"):
        for _ in range(3):
            hooks().connection_evicted("http://h:80", "idle")
    assert len(good.events) == 3  # later back-ends still get the event
    failures = [r for r in caplog.records if "failed in connection_evicted" in r.getMessage()]
    assert len(failures) == 1


def test_dispatcher_forwards_every_event_of_the_protocol() -> None:
    # The dispatcher's methods are generated from EVENTS: each one must exist,
    # satisfy the Protocol and hand over its arguments unchanged.
    rec = Recorder()
    add_instrumentation(rec)
    assert isinstance(hooks(), Instrumentation) and not isinstance(hooks(), NoopInstrumentation)
    emit_every_event(hooks(), "http://h:80")
    assert rec.events == every_event("http://h:80")
    assert [name for name, _ in rec.events] == list(EVENTS)


def test_a_hook_that_raises_is_swallowed_so_tests_assert_outside_it(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Why tests record and assert afterwards: an assertion failing inside a
    # hook never reaches the test, the request succeeds regardless.
    class Asserting(NoopInstrumentation):
        def connection_opened(self, host: str, connect_seconds: float) -> None:
            raise AssertionError("never seen by the test")

    add_instrumentation(Asserting())
    logs = caplog.at_level(logging.WARNING, logger="requests_azguard")
    with logs, HTTPTestServer() as srv, requests_azguard.mount(requests.Session()) as s:
        assert s.get(srv.url, timeout=5).ok
        assert s.get(srv.url, timeout=5).ok
    assert any("failed in connection_opened" in r.getMessage() for r in caplog.records)
    assert recorder.values("connection_opened", "host") == [f"http://127.0.0.1:{srv.port}"]
    assert len(recorder.of("connection_reused")) == 1


def test_non_conforming_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Instrumentation"):
        add_instrumentation(object())  # type: ignore[arg-type]


def test_public_exports() -> None:
    assert requests_azguard.Instrumentation is Instrumentation
    assert requests_azguard.add_instrumentation is add_instrumentation
    assert requests_azguard.__all__ == sorted(requests_azguard.__all__)


# ---------------------------------------------------------------- labels


def test_host_labels_first_n_then_other_and_stable() -> None:
    labels = HostLabels(max_hosts=2)
    assert labels("http://a:80") == "http://a:80"
    assert labels("http://b:80") == "http://b:80"
    assert labels("http://c:80") == "other"
    assert labels("http://a:80") == "http://a:80"  # a label never moves
    many = {labels(f"http://h{i}:80") for i in range(1000)}
    assert many == {"other"}


def test_host_labels_allow_list_matches_url_hostport_or_name() -> None:
    labels = HostLabels(allow=["https://api:443", "db:5432", "cache", "[::1]"])
    assert labels("https://api:443") == "https://api:443"
    assert labels("http://db:5432") == "http://db:5432"
    assert labels("http://cache:6379") == "http://cache:6379"
    assert labels("http://[::1]:8080") == "http://[::1]:8080"
    assert labels("https://api:8443") == "other"
    assert labels("http://elsewhere:80") == "other"


def test_host_labels_reject_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="allow"):
        HostLabels(allow="api:443")
    with pytest.raises(ConfigError, match="max_hosts"):
        HostLabels(max_hosts=-1)


def test_bounded_label() -> None:
    label = BoundedLabel(max_values=2)
    assert label("ECONNRESET") == "ECONNRESET"
    assert label("EPIPE") == "EPIPE"
    assert label("ETIMEDOUT") == "other"
    assert label("ECONNRESET") == "ECONNRESET"
    assert BoundedLabel()("has spaces and {braces}") == "other"


# ---------------------------------------------------------------- logs


def test_log_decision_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="requests_azguard"):
        log_decision(
            "evict",
            host="http://h:80",
            peer=("10.0.0.1", 80),
            reason="idle",
            errno=None,
            idle_s=61.0,
            message="collides with LogRecord",
        )
    (record,) = caplog.records
    assert record.name == "requests_azguard"
    assert record.levelno == logging.DEBUG
    assert record.decision == "evict"  # type: ignore[attr-defined]
    assert record.host == "http://h:80"  # type: ignore[attr-defined]
    assert record.peer == "10.0.0.1:80"  # type: ignore[attr-defined]
    assert record.reason == "idle"  # type: ignore[attr-defined]
    assert record.errno is None  # type: ignore[attr-defined]
    assert record.idle_s == 61.0  # type: ignore[attr-defined]
    assert record.azguard_message == "collides with LogRecord"  # type: ignore[attr-defined]
    assert "evict http://h:80 peer=10.0.0.1:80 reason=idle" in record.getMessage()


@pytest.mark.parametrize(
    "decision, level",
    [
        ("blackhole", logging.WARNING),
        ("condemn", logging.WARNING),
        ("breaker_open", logging.WARNING),
        ("retry", logging.INFO),
        ("fallback", logging.INFO),
        ("evict", logging.DEBUG),
        ("something_new", logging.DEBUG),
    ],
)
def test_log_levels_keep_routine_decisions_quiet(
    decision: str, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="requests_azguard"):
        log_decision(decision, host="http://h:80", errno="ECONNRESET")
    assert [r.levelno for r in caplog.records] == [level]
    assert caplog.records[0].errno == "ECONNRESET"  # type: ignore[attr-defined]


def test_log_decision_is_silent_at_warning_for_routine(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="requests_azguard"):
        log_decision("evict", host="http://h:80", reason="idle")
        log_decision("retry", host="http://h:80", reason="ECONNRESET")
        log_decision("blackhole", host="http://h:80", peer=("::1", 8080, 0, 0))
    assert [r.decision for r in caplog.records] == ["blackhole"]  # type: ignore[attr-defined]
    assert caplog.records[0].peer == "[::1]:8080"  # type: ignore[attr-defined]


def test_format_peer() -> None:
    assert format_peer(None) is None
    assert format_peer("unix:/x") == "unix:/x"
    assert format_peer(("127.0.0.1", 8080)) == "127.0.0.1:8080"
    assert format_peer(("::1", 443, 0, 0)) == "[::1]:443"


def test_logging_backend_logs_events(caplog: pytest.LogCaptureFixture) -> None:
    backend = LoggingInstrumentation()
    assert isinstance(backend, Instrumentation)
    add_instrumentation(backend)
    with caplog.at_level(logging.DEBUG, logger="requests_azguard.events"):
        hooks().connection_evicted("http://h:80", "peer_closed")
        hooks().breaker_transition("http://h:80", "closed", "open")
    events = [(r.event, r.host) for r in caplog.records]  # type: ignore[attr-defined]
    assert events == [
        ("connection_evicted", "http://h:80"),
        ("breaker_transition", "http://h:80"),
    ]
    assert caplog.records[0].reason == "peer_closed"  # type: ignore[attr-defined]
    assert caplog.records[1].new == "open"  # type: ignore[attr-defined]
