from __future__ import annotations

import os
import shutil
import ssl
import sys
from typing import Iterator, Tuple

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from recorder import Recorder
from servers import HTTPTestServer

REQUIRE_CHAOS = os.environ.get("AZGUARD_REQUIRE_CHAOS") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip with ``reason``; under AZGUARD_REQUIRE_CHAOS=1 (CI) fail instead."""
    if condition:
        return
    if REQUIRE_CHAOS:
        pytest.fail(f"AZGUARD_REQUIRE_CHAOS=1 but {reason}")
    pytest.skip(reason)


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} is not installed (Debian package: see .ci/run)")
    assert path is not None
    return path


def need_root() -> None:
    need(os.geteuid() == 0, "needs root (network namespaces, nftables, conntrack)")


class Clock:
    """An injected clock for the breaker registry: time moves only when told."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Iterator[Clock]:
    """A clean process whose breakers run on a :class:`Clock`."""
    from requests_azguard import _runtime

    c = Clock()
    with _runtime.testing(wall_clock=c):
        yield c


@pytest.fixture
def server() -> Iterator[HTTPTestServer]:
    with HTTPTestServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def tls_pair() -> Tuple[ssl.SSLContext, str]:
    """(server context, CA bundle path) from trustme certificates for 127.0.0.1."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".pem")
    os.close(fd)
    ca.cert_pem.write_to_path(path)
    return server_ctx, path


@pytest.fixture(autouse=True)
def _clean_process_state() -> Iterator[None]:
    """Breakers, condemnations, instrumentation and the rest are process-wide
    by design (they outlive Sessions); each test starts from a clean process
    state, and leaves one."""
    from requests_azguard import _runtime

    _runtime.reset()
    yield
    _runtime.reset()


@pytest.fixture
def recorder() -> Recorder:
    """A registered ``Recorder``: assert on its events after the requests
    (an assertion inside a hook is swallowed by the dispatcher)."""
    from requests_azguard._instrument import add_instrumentation

    rec = Recorder()
    add_instrumentation(rec)
    return rec
