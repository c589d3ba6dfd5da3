"""The failure policy: each row produced by a real socket, classified end to end.

Errors come from real servers (RST via SO_LINGER 0, FIN, silence, a refused
port, a full accept queue, a TLS peer that hangs up) through requests and
urllib3, so ``classify`` is exercised on each urllib3 line's own chains.
"""

from __future__ import annotations

import errno
import socket
import ssl
from typing import Iterator, Tuple

import pytest
import requests
from servers import Action, HTTPTestServer
from urllib3.exceptions import ProtocolError

import requests_azguard
from requests_azguard import GuardConfig
from requests_azguard._policy import (
    DEFAULT_TABLE,
    Decision,
    classify,
    decision_for,
    reset_decisions,
    set_decision,
)

# No retries and no breaker: the first failure surfaces as it is.
RAW = GuardConfig(retries=0, breaker=False)


def _fail(url: str, method: str = "GET", **kwargs: object) -> BaseException:
    s = requests_azguard.mount(requests.Session(), RAW)
    with pytest.raises(requests.RequestException) as info:
        s.request(method, url, timeout=kwargs.pop("timeout", 5), **kwargs)  # type: ignore[arg-type]
    return info.value


@pytest.fixture(autouse=True)
def _clean_table() -> Iterator[None]:
    yield
    reset_decisions()


def test_rst_after_reading_the_request() -> None:
    with HTTPTestServer(lambda r: Action(kind="rst")) as srv:
        c = classify(_fail(srv.url))
    assert (c.kind, c.errno_name) == ("ECONNRESET", "ECONNRESET")
    assert c.decision == Decision(evict=True, retry=True, blame="connection")


def test_fin_without_a_response() -> None:
    with HTTPTestServer(lambda r: Action(kind="fin")) as srv:
        c = classify(_fail(srv.url))
    assert c.kind == "peer_closed"
    assert c.decision.evict and c.decision.retry and not c.decision.condemn


def test_close_before_reading() -> None:
    with HTTPTestServer(on_accept=lambda sock, i: sock.close() or False) as srv:
        c = classify(_fail(srv.url))
    # The kernel answers the request with FIN or RST depending on timing.
    assert c.kind in ("peer_closed", "ECONNRESET", "EPIPE")
    assert c.decision.evict and c.decision.retry


def test_refused_port_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        c = classify(_fail(f"http://127.0.0.1:{port}/"))
    assert (c.kind, c.errno_name) == ("ECONNREFUSED", "ECONNREFUSED")
    assert c.decision.fail_fast and c.decision.blame == "host" and not c.decision.retry


def test_epipe_while_writing_a_large_body() -> None:
    # The server reads the headers and hangs up with a reset while 32 MB are
    # still coming: the client's write fails with EPIPE/ECONNRESET.  urllib3
    # swallows that write error on purpose (a server may answer early, e.g.
    # 413) and reads, so the failure surfaces from the read.
    with HTTPTestServer(lambda r: Action(kind="rst_before_read")) as srv:
        c = classify(_fail(srv.url, "POST", data=b"x" * (32 << 20)))
    assert c.kind in ("EPIPE", "ECONNRESET", "peer_closed")
    assert c.decision.evict and not c.decision.condemn


def test_connect_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # accept queue of one, never accepted
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    try:
        c = classify(_fail(f"http://127.0.0.1:{port}/", timeout=(0.3, 5)))
    finally:
        filler.close()
        listener.close()
    assert c.kind == "connect_timeout"
    assert c.decision.timeout and c.decision.blame == "host" and not c.decision.evict


def test_read_timeout() -> None:
    with HTTPTestServer(lambda r: Action(kind="silence")) as srv:
        exc = _fail(srv.url, timeout=(2, 0.2))
    c = classify(exc)
    assert c.kind == "read_timeout"
    # One ordinary failure: never the connect-timeout fail-fast rule.
    assert c.decision.evict and not c.decision.timeout and c.decision.blame == "host"


def test_tls_unexpected_eof(tls_pair: Tuple[ssl.SSLContext, str]) -> None:
    _, ca = tls_pair
    # A TLS URL whose server hangs up during the handshake.
    with HTTPTestServer(on_accept=lambda sock, i: sock.close() or False) as srv:
        exc = _fail(f"https://127.0.0.1:{srv.port}/", verify=ca)
    c = classify(exc)
    assert c.kind in ("tls_eof", "ECONNRESET"), exc
    assert c.decision.evict and c.decision.retry


def test_errnos_from_real_syscalls() -> None:
    # EINVAL and ENOTCONN straight from the kernel, wrapped as urllib3 wraps
    # errors raised while a request is on the wire.
    with socket.socket() as s:
        with pytest.raises(OSError) as einval:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, b"\x00")
        with pytest.raises(OSError) as enotconn:
            s.getpeername()
    assert einval.value.errno == errno.EINVAL and enotconn.value.errno == errno.ENOTCONN
    for raw, row in ((einval.value, "EINVAL"), (enotconn.value, "ENOTCONN")):
        wrapped = requests.ConnectionError(ProtocolError("Connection aborted.", raw))
        c = classify(wrapped)
        assert c.kind == row and c.errno_name == row
        assert c.decision.condemn and c.decision.retry


def test_every_row_is_a_decision() -> None:
    required = {
        "EINVAL", "EPIPE", "ECONNRESET", "ETIMEDOUT", "ENOTCONN", "ECONNREFUSED",
        "EHOSTUNREACH", "ENETUNREACH", "connect_timeout", "read_timeout", "peer_closed",
        "tls_eof", "dns", "blackhole",
    }  # fmt: skip
    assert required <= set(DEFAULT_TABLE)
    for kind, decision in DEFAULT_TABLE.items():
        assert isinstance(decision, Decision), kind
        # Failing fast and retrying contradict each other.
        assert not (decision.fail_fast and decision.retry), kind


def test_rows_can_be_overridden_from_python() -> None:
    custom = Decision(evict=True, retry=False, blame="nobody")
    set_decision("ECONNRESET", custom)
    assert decision_for("ECONNRESET") == custom
    with HTTPTestServer(lambda r: Action(kind="rst")) as srv:
        assert classify(_fail(srv.url)).decision == custom
    reset_decisions()
    assert decision_for("ECONNRESET") == DEFAULT_TABLE["ECONNRESET"]
    with pytest.raises(requests_azguard.ConfigError, match="ECONNRESETT"):
        set_decision("ECONNRESETT", custom)
    with pytest.raises(requests_azguard.ConfigError, match="decision"):
        set_decision("ECONNRESET", (True,))  # type: ignore[arg-type]


def test_override_changes_what_the_adapter_does() -> None:
    """A row turned to 'no retry' stops the GET retry a reset would get."""
    seen = {"n": 0}

    def behaviour(req: object) -> Action:
        seen["n"] += 1
        return Action(kind="rst") if seen["n"] == 1 else Action()

    cfg = GuardConfig(retries=2, breaker=False)
    with HTTPTestServer(behaviour) as srv:
        s = requests_azguard.mount(requests.Session(), cfg)
        set_decision("ECONNRESET", Decision(evict=True))
        with pytest.raises(requests.ConnectionError):
            s.get(srv.url, timeout=5)
        reset_decisions()
        seen["n"] = 0
        assert s.get(srv.url, timeout=5).text == "ok"


def test_read_timeout_surfaces_as_requests_readtimeout_and_is_not_retried() -> None:
    """A caller catching requests.Timeout keeps working, and the read timeout
    is a budget: it is not multiplied by retries."""
    with HTTPTestServer(lambda r: Action(kind="silence")) as srv:
        s = requests_azguard.mount(requests.Session(), GuardConfig(retries=3, breaker=False))
        with pytest.raises(requests.exceptions.ReadTimeout):
            s.get(srv.url, timeout=(2, 0.2))
        assert len(srv.requests) == 1


def test_from_env_with_autostart_variable_set() -> None:
    cfg = GuardConfig.from_env({"AZGUARD_AUTO": "1", "AZGUARD_RETRIES": "2"})
    assert cfg.retries == 2


def test_a_config_policy_changes_only_its_own_adapters() -> None:
    """Per-config rows win over the process-wide table, for that config only."""
    seen = {"n": 0}

    def behaviour(req: object) -> Action:
        seen["n"] += 1
        return Action(kind="rst") if seen["n"] in (1, 2) else Action()

    no_retry = requests_azguard.Policy(
        ECONNRESET=requests_azguard.DEFAULT_TABLE["ECONNRESET"]._replace(retry=False)
    )
    strict = GuardConfig(retries=2, breaker=False, policy=no_retry)
    default = GuardConfig(retries=2, breaker=False)
    with HTTPTestServer(behaviour) as srv:
        # Request 1 is reset and not replayed under the strict policy...
        with pytest.raises(requests.ConnectionError):
            requests_azguard.mount(requests.Session(), strict).get(srv.url, timeout=5)
        # ...request 2 is reset and replayed (request 3) under the default one.
        assert requests_azguard.mount(requests.Session(), default).get(srv.url, timeout=5).ok
        assert seen["n"] == 3


def test_policy_is_validated_immutable_and_survives_pickling() -> None:
    import pickle

    row = requests_azguard.DEFAULT_TABLE["ECONNRESET"]._replace(retry=False)
    policy = requests_azguard.Policy(ECONNRESET=row)
    with pytest.raises(requests_azguard.ConfigError, match="ECONNRESETT"):
        requests_azguard.Policy(ECONNRESETT=row)
    with pytest.raises(requests_azguard.ConfigError, match="blame"):
        requests_azguard.Policy(ECONNRESET=row._replace(blame="everyone"))
    with pytest.raises(AttributeError):
        policy.rows = {}  # type: ignore[misc]
    with pytest.raises(requests_azguard.ConfigError, match="GuardConfig.policy"):
        GuardConfig(policy={"ECONNRESET": row})  # type: ignore[arg-type]
    cfg = GuardConfig(policy=policy)
    assert hash(cfg) == hash(GuardConfig(policy=requests_azguard.Policy({"ECONNRESET": row})))
    adapter = requests_azguard.AzGuardAdapter(cfg)
    assert pickle.loads(pickle.dumps(adapter)).azguard_config.policy == policy
    assert policy.replace(EPIPE=row).rows.keys() == {"ECONNRESET", "EPIPE"}
