"""Prometheus back-end, the metrics endpoint, and the examples built on them.

The end-to-end test drives real faults (an RST on a pooled connection, a
refused port) through a mounted Session and reads the series back from a
real scrape of the endpoint.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Set, Tuple

import pytest
import requests

import requests_azguard
from requests_azguard import GuardConfig
from requests_azguard._instrument import EVENTS, Instrumentation, hooks

pc = pytest.importorskip("prometheus_client")
from conftest import need_tool  # noqa: E402
from pooled import pooled_sockets  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from recorder import emit_every_event  # noqa: E402
from servers import Action, HTTPTestServer, free_port, rst_close, wait_until  # noqa: E402

from requests_azguard import _prometheus  # noqa: E402
from requests_azguard._prometheus import (  # noqa: E402
    METRICS,
    PrometheusInstrumentation,
    enable_from_config,
    serve_metrics,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

Samples = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]


def scrape(port: int, addr: str = "127.0.0.1") -> str:
    host = f"[{addr}]" if ":" in addr else addr
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text: str = resp.read().decode()
        return text


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(found: Samples, name: str, **labels: str) -> float:
    """Sum of ``name`` over series whose labels contain ``labels`` (host: substring)."""
    value = 0.0
    for (n, lbls), v in found.items():
        d = dict(lbls)
        if n != name:
            continue
        if "host" in labels and labels["host"] not in d.get("host", ""):
            continue
        if any(d.get(k) != v2 for k, v2 in labels.items() if k != "host"):
            continue
        value += v
    return value


def exported_names() -> Set[str]:
    """Every sample name the back-end exports, read from the back-end itself."""
    registry = pc.CollectorRegistry()
    emit_every_event(PrometheusInstrumentation(registry), "http://probe:80")
    return {s.name for family in registry.collect() for s in family.samples}


@pytest.fixture
def endpoint() -> Iterator[int]:
    port = free_port()
    backend = enable_from_config(GuardConfig(metrics_port=port))
    assert backend is not None
    yield port
    _prometheus._reset_for_tests()


# ---------------------------------------------------------------- back-end


def test_backend_implements_the_protocol_and_every_family_moves() -> None:
    registry = pc.CollectorRegistry()
    backend = PrometheusInstrumentation(registry)
    assert isinstance(backend, Instrumentation)
    assert {name for name in EVENTS} <= set(dir(backend))
    emit_every_event(backend, "http://svc:80")
    found = samples(pc.generate_latest(registry).decode())
    assert total(found, "azguard_connections_opened_total", host="svc") == 1
    assert total(found, "azguard_connect_seconds_count", host="svc") == 1
    assert total(found, "azguard_connect_seconds_sum", host="svc") == pytest.approx(0.003)
    assert total(found, "azguard_connections_evicted_total", reason="peer_closed") == 1
    assert total(found, "azguard_errors_total", errno="ECONNRESET") == 1
    assert total(found, "azguard_condemnations_total") == 1
    assert total(found, "azguard_condemned_connections_total") == 3
    assert (
        total(found, "azguard_breaker_transitions_total", from_state="closed", to_state="open") == 1
    )
    assert total(found, "azguard_breaker_state", host="svc") == 2
    assert total(found, "azguard_tcp_health_total", grade="healthy") == 1
    assert total(found, "azguard_tcp_rtt_seconds_bucket", le="0.0005") == 1
    assert total(found, "azguard_tcp_rtt_seconds_bucket", le="0.00025") == 0
    for _attr, kind, name, _doc, _labels in METRICS:
        key = name + ("" if kind == "gauge" else "_count" if kind == "histogram" else "_total")
        assert total(found, key) > 0, key


def test_breaker_state_gauge_follows_transitions() -> None:
    registry = pc.CollectorRegistry()
    backend = PrometheusInstrumentation(registry)
    for old, new, value in [
        ("closed", "open", 2),
        ("open", "half-open", 1),
        ("HALF_OPEN", "closed", 0),
    ]:
        backend.breaker_transition("http://b:1", old, new)
        found = samples(pc.generate_latest(registry).decode())
        assert total(found, "azguard_breaker_state", host="b:1") == value
    found = samples(pc.generate_latest(registry).decode())
    assert total(found, "azguard_breaker_transitions_total", from_state="half-open") == 1


def test_collectors_are_created_once_per_registry() -> None:
    registry = pc.CollectorRegistry()
    a = PrometheusInstrumentation(registry)
    b = PrometheusInstrumentation(registry)  # a second registration would raise
    a.blackhole("http://x:1")
    b.blackhole("http://x:1")
    found = samples(pc.generate_latest(registry).decode())
    assert total(found, "azguard_blackholes_total", host="x:1") == 2


def test_host_label_cardinality_is_bounded() -> None:
    registry = pc.CollectorRegistry()
    backend = PrometheusInstrumentation(registry, max_hosts=3)
    for i in range(40):
        backend.connection_reused(f"http://h{i}:80")
    found = samples(pc.generate_latest(registry).decode())
    hosts = {dict(lbls)["host"] for (n, lbls) in found if n == "azguard_connections_reused_total"}
    assert hosts == {"http://h0:80", "http://h1:80", "http://h2:80", "other"}
    assert total(found, "azguard_connections_reused_total", host="other") == 37

    allow = PrometheusInstrumentation(pc.CollectorRegistry(), hosts=["h7:80"])
    assert allow._host("http://h7:80") == "http://h7:80"
    assert allow._host("http://h8:80") == "other"


# ---------------------------------------------------------------- endpoint


def test_endpoint_serves_every_family_over_http(endpoint: int) -> None:
    host = f"http://every-event-{endpoint}:80"
    emit_every_event(hooks(), host)
    found = samples(scrape(endpoint))
    for _attr, kind, name, _doc, _labels in METRICS:
        key = name + ("" if kind == "gauge" else "_count" if kind == "histogram" else "_total")
        assert total(found, key, host=host) > 0, key


def test_endpoint_binds_loopback_by_default(endpoint: int) -> None:
    server = _prometheus._servers[("127.0.0.1", endpoint)]
    assert server.httpd.server_address[0] == "127.0.0.1"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{endpoint}/nope", timeout=5)
    assert err.value.code == 404


def test_enable_is_idempotent_and_off_without_a_port(endpoint: int) -> None:
    cfg = GuardConfig(metrics_port=endpoint)
    assert enable_from_config(cfg) is enable_from_config(cfg)
    assert len(_prometheus._servers) == 1
    assert enable_from_config(GuardConfig()) is None


def test_endpoint_on_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    port = free_port()
    try:
        assert serve_metrics("::1", port) is not None
        assert "# HELP" in scrape(port, "::1") or scrape(port, "::1") == ""
    finally:
        _prometheus._reset_for_tests()


def test_port_in_use_is_logged_once_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        with caplog.at_level("WARNING", logger="requests_azguard"):
            for _ in range(3):
                backend = enable_from_config(GuardConfig(metrics_port=port))
                # The program still gets its instrumentation, just not the endpoint.
                assert backend is not None
        lines = [r for r in caplog.records if "cannot serve metrics" in r.getMessage()]
        assert len(lines) == 1
        assert f"127.0.0.1:{port}" in lines[0].getMessage()
        # ... and requests through a guarded Session are unaffected.
        with HTTPTestServer() as srv:
            s = requests_azguard.mount(requests.Session(), GuardConfig(metrics_port=port))
            assert s.get(srv.url + "/", timeout=5).status_code == 200
            s.close()
    finally:
        busy.close()
        _prometheus._reset_for_tests()


def test_metrics_port_from_the_environment_serves_in_a_real_process() -> None:
    """AZGUARD_METRICS_PORT in a subprocess: its own scrape shows its own traffic."""
    port = free_port()
    code = (
        "import requests, requests_azguard, urllib.request, sys\n"
        "from requests_azguard import _prometheus, _instrument\n"
        "cfg = requests_azguard.GuardConfig.from_env()\n"
        "_prometheus.enable_from_config(cfg)\n"
        "_instrument.hooks().connection_evicted('http://svc:80', 'idle')\n"
        f"print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read().decode())\n"
    )
    env = dict(os.environ, AZGUARD_METRICS_PORT=str(port))
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    found = samples(out.stdout)
    assert total(found, "azguard_connections_evicted_total", host="svc", reason="idle") == 1


# ---------------------------------------------------------------- end to end


def pooled_socket_readable(session: requests.Session, url: str) -> bool:
    """True when an idle pooled connection to ``url`` has something pending
    (here: the RST), read without consuming it."""
    socks = pooled_sockets(session, url)
    if not socks:
        return False
    readable, _, _ = select.select(socks, [], [], 0)
    return bool(readable)


def expect(found: Samples, name: str, event: str, **labels: str) -> None:
    """``name`` with ``labels`` has a non-zero sample (``event`` is the hook behind it)."""
    if total(found, name, **labels) > 0:
        return
    raise AssertionError(
        f"{name} with {labels} missing from the scrape after real traffic "
        f"(reported through hooks().{event}())"
    )


def test_scrape_after_real_faults_through_a_guarded_session(endpoint: int) -> None:
    cfg = GuardConfig(
        metrics_port=endpoint, breaker_fail_max=2, retries=0, breaker_reset_timeout=60.0
    )
    session = requests_azguard.mount(requests.Session(), cfg)
    with HTTPTestServer() as srv:
        host = f"127.0.0.1:{srv.port}"
        for _ in range(3):
            assert session.get(srv.url + "/", timeout=5).status_code == 200
        # RST the pooled connection after its response: the next request must
        # find it dead before reuse and go out on a fresh connection.
        assert srv.accepted == 1
        rst_close(srv.connections[0])
        # The server thread may still sit in select() on that socket, which
        # delays the RST until it wakes: wait until the client side sees it.
        assert wait_until(lambda: pooled_socket_readable(session, srv.url))
        assert session.get(srv.url + "/", timeout=5).status_code == 200
        assert wait_until(lambda: srv.accepted == 2)

    refused = free_port()  # nothing listens there
    refused_url = f"http://127.0.0.1:{refused}/"
    outcomes: List[str] = []
    for _ in range(4):
        try:
            session.get(refused_url, timeout=5)
            outcomes.append("answered")
        except Exception as exc:  # the exception contract is another test's business
            outcomes.append(type(exc).__name__)
    assert "answered" not in outcomes
    session.close()

    # The breaker is per host and process-wide: a session configured with a
    # fallback status now gets the synthetic answer for the open host.
    fallback = requests_azguard.mount(
        requests.Session(), cfg.replace(fallback_status=503, metrics_port=endpoint)
    )
    try:
        fallback.get(refused_url, timeout=5)
    except Exception:
        pass  # asserted through the fallbacks series below
    # A reset in the middle of the first request: retried on a fresh connection.
    with HTTPTestServer(lambda req: Action(kind="rst") if req.conn_id == 0 else Action()) as flaky:
        retry_host = f"127.0.0.1:{flaky.port}"
        retrying = requests_azguard.mount(requests.Session(), cfg.replace(retries=2))
        assert retrying.get(flaky.url + "/", timeout=5).status_code == 200
        retrying.close()
    fallback.close()

    found = samples(scrape(endpoint))
    expect(found, "azguard_connections_opened_total", "connection_opened", host=host)
    expect(found, "azguard_connect_seconds_count", "connection_opened", host=host)
    expect(found, "azguard_connections_reused_total", "connection_reused", host=host)
    refused_host = f"127.0.0.1:{refused}"
    expect(found, "azguard_errors_total", "error", host=refused_host, errno="ECONNREFUSED")
    expect(
        found,
        "azguard_breaker_transitions_total",
        "breaker_transition",
        host=refused_host,
        to_state="open",
    )
    expect(found, "azguard_breaker_state", "breaker_transition", host=refused_host)
    expect(found, "azguard_fallbacks_total", "fallback_served", host=refused_host)
    expect(found, "azguard_retries_total", "retry", host=retry_host)
    expect(found, "azguard_connections_evicted_total", "connection_evicted", host=host)
    expect(found, "azguard_tcp_rtt_seconds_count", "tcp_info", host=host)
    expect(found, "azguard_tcp_health_total", "tcp_info", host=host)


def test_adapter_serves_metrics_when_configured() -> None:
    port = free_port()
    try:
        requests_azguard.AzGuardAdapter(config=GuardConfig(metrics_port=port))
        text = scrape(port)
        assert "azguard_" in text or text == ""
    finally:
        _prometheus._reset_for_tests()


# ---------------------------------------------------------------- examples


def metric_tokens(expr: str) -> Set[str]:
    return set(re.findall(r"\bazguard_[a-zA-Z0-9_]+", expr))


def dashboard_exprs() -> List[str]:
    data = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exprs: List[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str):
                    exprs.append(value)
                elif key == "query" and isinstance(value, dict):
                    exprs.append(str(value.get("query", "")))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)
    return exprs


def test_dashboard_names_only_exported_metrics_and_covers_every_family() -> None:
    exported = exported_names()
    assert {"azguard_connections_opened_total", "azguard_connect_seconds_bucket"} <= exported
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    used: Set[str] = set()
    for expr in exprs:
        tokens = metric_tokens(expr)
        assert tokens <= exported, f"{expr!r} names {tokens - exported}, not exported"
        used |= tokens
    families = {name for _a, _k, name, _d, _l in METRICS}
    uncovered = {f for f in families if not any(u.startswith(f) for u in used)}
    assert not uncovered, f"dashboard has no panel for {uncovered}"


def alert_rules_text() -> str:
    return (EXAMPLES / "prometheus-alerts.yml").read_text()


def test_alert_rules_name_only_exported_metrics() -> None:
    exported = exported_names()
    text = alert_rules_text()
    exprs = re.findall(r"^\s*expr:\s*(.+)$", text, flags=re.M)
    assert len(exprs) >= 4
    for expr in exprs:
        tokens = metric_tokens(expr)
        assert tokens, f"{expr!r} names no azguard metric"
        assert tokens <= exported, f"{expr!r} names {tokens - exported}, not exported"
    try:
        import yaml
    except ImportError:
        return  # promtool below checks the structure; the names were checked above
    doc = yaml.safe_load(text)
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) == len(exprs)
    assert all(r["alert"] and r["expr"] and r["labels"]["severity"] for r in rules)


def without_annotations(text: str) -> str:
    """The rules with their annotation blocks removed, so promtool's unit tests
    compare labels only (annotation templates are checked by ``check rules``)."""
    out: List[str] = []
    skipping = False
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if line.strip() == "annotations:":
            skipping, block_indent = True, indent
            continue
        if skipping and line.strip() and indent > block_indent:
            continue
        skipping = False
        out.append(line)
    return "\n".join(out) + "\n"


# Series for two hosts: "a" is in trouble, "b" is healthy; each alert must fire
# for a and only for a.  16 one-minute samples, evaluated at 15m.
PROMTOOL_SERIES = [
    ('azguard_breaker_state{host="a"}', "0 2+0x14"),
    ('azguard_breaker_state{host="b"}', "0+0x15"),
    (
        'azguard_breaker_transitions_total{host="a",from_state="closed",to_state="open"}',
        "0 1 2 3+0x12",
    ),
    ('azguard_breaker_transitions_total{host="b",from_state="closed",to_state="open"}', "0 1+0x14"),
    ('azguard_blackholes_total{host="a"}', "0+0x10 1+0x5"),
    ('azguard_blackholes_total{host="b"}', "0+0x15"),
    ('azguard_connections_evicted_total{host="a",reason="peer_closed"}', "0+60x15"),
    ('azguard_connections_evicted_total{host="b",reason="peer_closed"}', "0+1x15"),
    ('azguard_connections_reused_total{host="a"}', "0+60x15"),
    ('azguard_connections_reused_total{host="b"}', "0+600x15"),
    ('azguard_connections_opened_total{host="a"}', "0+6x15"),
    ('azguard_connections_opened_total{host="b"}', "0+6x15"),
    ('azguard_errors_total{host="a",errno="ECONNRESET"}', "0+120x15"),
    ('azguard_errors_total{host="b",errno="ECONNRESET"}', "0+1x15"),
    ('azguard_retries_total{host="a",reason="ECONNRESET"}', "0+120x15"),
    ('azguard_retries_total{host="b",reason="ECONNRESET"}', "0+1x15"),
    ('azguard_fallbacks_total{host="a"}', "0+10x15"),
    ('azguard_fallbacks_total{host="b"}', "0+0x15"),
    ('azguard_tcp_health_total{host="a",grade="unhealthy"}', "0+30x15"),
    ('azguard_tcp_health_total{host="a",grade="healthy"}', "0+30x15"),
    ('azguard_tcp_health_total{host="b",grade="unhealthy"}', "0+0x15"),
    ('azguard_tcp_health_total{host="b",grade="healthy"}', "0+60x15"),
    ('azguard_connect_seconds_bucket{host="a",le="1"}', "0+0x15"),
    ('azguard_connect_seconds_bucket{host="a",le="2.5"}', "0+60x15"),
    ('azguard_connect_seconds_bucket{host="a",le="+Inf"}', "0+60x15"),
    ('azguard_connect_seconds_bucket{host="b",le="1"}', "0+60x15"),
    ('azguard_connect_seconds_bucket{host="b",le="2.5"}', "0+60x15"),
    ('azguard_connect_seconds_bucket{host="b",le="+Inf"}', "0+60x15"),
]


def test_alert_rules_pass_promtool_and_fire_only_for_the_troubled_host(tmp_path: Path) -> None:
    promtool = need_tool("promtool")
    rules = EXAMPLES / "prometheus-alerts.yml"
    check = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr

    stripped = tmp_path / "rules.yml"
    stripped.write_text(without_annotations(rules.read_text()))
    alerts = re.findall(r"^\s*- alert:\s*(\S+)", rules.read_text(), flags=re.M)
    severities = re.findall(r"^\s*severity:\s*(\S+)", rules.read_text(), flags=re.M)
    assert len(alerts) == len(severities) >= 8
    lines = [
        "rule_files:",
        f"  - {stripped}",
        "evaluation_interval: 1m",
        "tests:",
        "  - interval: 1m",
        "    input_series:",
    ]
    for series, values in PROMTOOL_SERIES:
        lines += [f"      - series: '{series}'", f"        values: '{values}'"]
    lines.append("    alert_rule_test:")
    for alert, severity in zip(alerts, severities):
        labels = {"severity": severity, "host": "a"}
        if alert == "AzGuardConnectionErrors":
            labels["errno"] = "ECONNRESET"
        lines += [
            "      - eval_time: 15m",
            f"        alertname: {alert}",
            "        exp_alerts:",
            "          - exp_labels: " + json.dumps(labels),
        ]
    spec = tmp_path / "alerts-test.yml"
    spec.write_text("\n".join(lines) + "\n")
    run = subprocess.run(
        [promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
