"""The metrics endpoint under hostile or unusual conditions, with real sockets
and real processes: idle clients, fork, several processes writing one
multiprocess directory; and series that exist from a host's first use."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, FrozenSet, List, Tuple

import pytest

pc = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from servers import HTTPTestServer, free_port, wait_until  # noqa: E402

from requests_azguard import _prometheus  # noqa: E402
from requests_azguard._prometheus import (  # noqa: E402
    IDLE_TIMEOUT,
    MAX_THREADS,
    MetricsServer,
    PrometheusInstrumentation,
)

Samples = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]
BOUND = 60


def samples_of(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text: str = resp.read().decode()
    return text


def metrics_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("Thread-") and t.daemon)


def test_defaults_are_bounded() -> None:
    assert 0 < IDLE_TIMEOUT <= 60
    assert 0 < MAX_THREADS <= 32


def test_500_idle_clients_hold_a_bounded_number_of_threads() -> None:
    registry = pc.CollectorRegistry()
    pc.Counter("probe", "a series to scrape", registry=registry).inc()
    server = MetricsServer("127.0.0.1", 0, registry, idle_timeout=1.0, max_threads=4)
    before = threading.active_count()
    clients: List[socket.socket] = []
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            # This sampler is one thread of its own.
            peak[0] = max(peak[0], threading.active_count() - before - 1)
            stop.wait(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for _ in range(500):
            clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=30))
        # Each client, idle, ends with either a 503 (over the thread limit)
        # or an EOF after the idle timeout (served, then dropped).
        refused = dropped = 0
        for sock in clients:
            data = sock.recv(4096)
            if data.startswith(b"HTTP/1.0 503"):
                refused += 1
            else:
                assert data == b"", data
                dropped += 1
        assert refused + dropped == 500
        assert dropped >= 4
        # Their threads are gone.
        assert wait_until(lambda: threading.active_count() <= before + 1, timeout=BOUND)
        stop.set()
        sampler.join()
        assert peak[0] <= 4, peak[0]
        print(f"500 idle clients: {refused} answered 503, {dropped} served then dropped, peak {peak[0]} threads")
        # The endpoint still answers.
        assert "probe_total 1.0" in scrape(server.port)
    finally:
        for sock in clients:
            sock.close()
        server.close()


FORK_SCRIPT = """
import os, sys
from requests_azguard import _prometheus
server = _prometheus.serve_metrics("127.0.0.1", int(sys.argv[1]))
assert server is not None
pid = os.fork()
if pid == 0:
    # The child lives on after the parent: it waits until the test closes
    # its stdin, and keeps nothing else the test reads from.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.read(0, 1)
    os._exit(0)
print(pid, flush=True)
"""


def test_metrics_port_is_free_after_the_parent_exits_while_a_fork_lives(
    tmp_path: Path,
) -> None:
    port = free_port()
    script = tmp_path / "fork_metrics.py"
    script.write_text(FORK_SCRIPT)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None and parent.stdin is not None
    child = int(parent.stdout.readline())
    try:
        assert parent.wait(BOUND) == 0
        os.kill(child, 0)  # the child is alive
        # Nobody listens any more: a connection is refused (not accepted
        # into a backlog nobody serves) and a new server can bind the port.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        again = MetricsServer("127.0.0.1", port, pc.CollectorRegistry())
        again.close()
    finally:
        parent.stdin.close()  # releases the child
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


WORKER = """
import sys
import requests, requests_azguard
session = requests_azguard.mount(requests.Session(), requests_azguard.GuardConfig(
    metrics_port=int(sys.argv[2])))
for _ in range(int(sys.argv[3])):
    assert session.get(sys.argv[1], timeout=10).status_code == 200
session.close()
print("done", flush=True)
if sys.argv[4] == "stay":
    sys.stdin.read()
"""


def test_two_processes_one_multiprocess_directory_one_scrape(
    tmp_path: Path, server: HTTPTestServer
) -> None:
    mpdir = tmp_path / "prom"
    mpdir.mkdir()
    port = free_port()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZGUARD_")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(mpdir)
    # The first worker binds the port and serves; the second cannot bind
    # (said once on its log) but writes its values to the same directory.
    first = subprocess.Popen(
        [sys.executable, str(script), server.url, str(port), "3", "stay"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first.stdout is not None and first.stdin is not None
    try:
        assert first.stdout.readline() == "done\n"
        second = subprocess.run(
            [sys.executable, str(script), server.url, str(port), "5", "exit"],
            env=env,
            capture_output=True,
            text=True,
            timeout=BOUND,
        )
        assert second.returncode == 0, second.stderr
        assert "cannot serve metrics" in second.stderr
        samples = samples_of(scrape(port))
    finally:
        first.stdin.close()
        first.wait(BOUND)
    host = frozenset({("host", server.url.rstrip("/"))})
    opened = samples[("azguard_connections_opened_total", host)]
    reused = samples[("azguard_connections_reused_total", host)]
    assert opened == 2  # one connection per process
    assert reused == (3 - 1) + (5 - 1)
    assert samples[("azguard_breaker_state", host)] == 0
    assert len(list(mpdir.iterdir())) >= 2  # each process wrote its own files


def test_series_exist_from_a_hosts_first_use() -> None:
    registry = pc.CollectorRegistry()
    backend = PrometheusInstrumentation(registry)
    backend.connection_opened("http://a:80", 0.001)
    samples = samples_of(pc.generate_latest(registry).decode())
    host = frozenset({("host", "http://a:80")})
    assert samples[("azguard_breaker_state", host)] == 0
    for name in (
        "azguard_connections_reused_total",
        "azguard_blackholes_total",
        "azguard_fallbacks_total",
        "azguard_condemnations_total",
    ):
        assert samples[(name, host)] == 0, name
    assert samples[("azguard_connections_opened_total", host)] == 1
    # A host's first event being a transition still ends in that state.
    backend.breaker_transition("http://b:80", "closed", "open")
    samples = samples_of(pc.generate_latest(registry).decode())
    assert samples[("azguard_breaker_state", frozenset({("host", "http://b:80")}))] == 2


def test_reset_keeps_module_usable() -> None:
    _prometheus._reset_for_tests()
