"""The urllib3-level front door and the SDK reach of install()/AZGUARD_AUTO.

Front door: real sockets on loopback.  SDKs: the real packages (the ``sdk``
extra); the integration tests run each client in a fresh interpreter under
``AZGUARD_AUTO=1`` (so the start-up hook is what guards it) against local
servers: moto's S3 under waitress, and JSON answers for kubernetes and
azure-core.  They skip when an SDK is not installed on this line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import requests
import urllib3
import urllib3.poolmanager
from conftest import Clock
from pooled import pooled_sockets
from servers import Action, HTTPTestServer
from sockopts import LINUX, read_options
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.util.retry import Retry

import requests_azguard as az
from requests_azguard import _install, _sdk
from requests_azguard._breaker_registry import registry
from requests_azguard._install import InstallConflictError
from requests_azguard._retry import AzRetry
from requests_azguard._urllib3 import (
    GuardedHTTPConnectionPool,
    PoolCircuitOpenError,
    guarded_pool_class,
    merge_socket_options,
)

HERE = Path(__file__).resolve().parent
SDK_CLIENT = HERE / "scenarios" / "sdk_client.py"
CFG = az.GuardConfig(keepalive_idle=17.0, keepalive_interval=3.0, keepalive_count=4)


@pytest.fixture(autouse=True)
def _uninstalled() -> Iterator[None]:
    yield
    if _install.is_installed():
        az.uninstall()


# -- the front door ---------------------------------------------------------------


def test_pool_manager_sets_keepalive_and_keeps_nagle_off(server: HTTPTestServer) -> None:
    pm = az.PoolManager(config=CFG)
    assert pm.request("GET", server.url + "/a").data == b"ok"
    assert pm.request("GET", server.url + "/b").data == b"ok"
    assert server.accepted == 1  # one pooled connection, reused
    (sock,) = pooled_sockets(pm)
    opts = read_options(sock)
    assert opts["SO_KEEPALIVE"] == 1 and opts["TCP_NODELAY"] == 1
    if LINUX:
        assert (opts["TCP_KEEPIDLE"], opts["TCP_KEEPINTVL"], opts["TCP_KEEPCNT"]) == (17, 3, 4)


@pytest.mark.skipif(not LINUX, reason="reads Linux keepalive options back")
def test_callers_socket_options_are_kept_and_extended(server: HTTPTestServer) -> None:
    mine = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)]
    pm = az.PoolManager(config=CFG, socket_options=mine)
    pm.request("GET", server.url + "/")
    (sock,) = pooled_sockets(pm)
    opts = read_options(sock)
    # The caller's idle wins; what it left unset comes from the guard; the
    # caller gave no TCP_NODELAY (a list replaces urllib3's defaults) and gets none.
    assert opts["TCP_KEEPIDLE"] == 77
    assert (opts["TCP_KEEPINTVL"], opts["TCP_KEEPCNT"]) == (3, 4)
    assert opts["TCP_NODELAY"] == 0


def test_merge_socket_options_caller_first() -> None:
    assert merge_socket_options([(1, 2, 3)], [(1, 2, 9), (4, 5, 6)]) == [(1, 2, 3), (4, 5, 6)]
    assert merge_socket_options(None, [(4, 5, 6)]) == [(4, 5, 6)]


def test_assigned_pool_classes_become_guarded_subclasses_and_urllib3_is_untouched() -> None:
    before = dict(urllib3.poolmanager.pool_classes_by_scheme)

    class SdkConnection(urllib3.connection.HTTPConnection):
        pass

    class SdkPool(HTTPConnectionPool):
        ConnectionCls = SdkConnection

    pm = az.PoolManager(config=CFG)
    pm.pool_classes_by_scheme = {"http": SdkPool}
    cls = pm.pool_classes_by_scheme["http"]
    assert issubclass(cls, SdkPool) and issubclass(cls, GuardedHTTPConnectionPool)
    # The SDK's overrides come before the guard's, which come before urllib3's.
    mro = cls.ConnectionCls.__mro__
    assert mro.index(SdkConnection) < mro.index(az._connection.GuardedConnection)
    assert guarded_pool_class(SdkPool) is cls  # derived once
    assert guarded_pool_class(HTTPConnectionPool) is GuardedHTTPConnectionPool
    assert urllib3.poolmanager.pool_classes_by_scheme == before
    assert urllib3.poolmanager.pool_classes_by_scheme["http"] is HTTPConnectionPool


def test_retry_false_is_kept_but_the_failed_flow_is_still_judged(server: HTTPTestServer) -> None:
    """botocore calls urlopen with Retry(False) and retries in its own layer:
    the guard must not replay, but still acts on the failure (it condemns)."""
    calls: List[Any] = []
    server.behaviour = lambda req: Action(kind="rst") if req.conn_seq == 2 else Action()
    pm = az.PoolManager(config=CFG)
    pool = pm.connection_from_url(server.url)
    original = AzRetry.increment

    def spy(self: AzRetry, *a: Any, **kw: Any) -> Any:
        calls.append(self.total)
        return original(self, *a, **kw)

    AzRetry.increment = spy  # type: ignore[method-assign]
    try:
        assert pool.urlopen("GET", "/1", retries=Retry(False)).status == 200
        with pytest.raises(urllib3.exceptions.ProtocolError):
            pool.urlopen("GET", "/2", retries=Retry(False))
    finally:
        AzRetry.increment = original  # type: ignore[method-assign]
    assert calls == [False]  # the guard's increment ran once, and did not replay
    assert len(server.requests) == 2


def test_callers_retry_settings_are_kept(server: HTTPTestServer) -> None:
    retry = Retry(total=4, backoff_factor=0.0, status_forcelist=[503], allowed_methods=["GET"])
    answers = iter([503, 503, 200])
    server.behaviour = lambda req: Action(status=next(answers))
    pm = az.PoolManager(config=CFG.replace(breaker=False), retries=retry)
    assert pm.request("GET", server.url + "/").status == 200
    assert len(server.requests) == 3


# A body short of its Content-Length, and a chunked body cut mid-chunk.
_BROKEN_BODIES = {
    "short_content_length": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a few bytes",
    "broken_chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
}


def _urllib3_outcome(pm: Any, url: str) -> object:
    """The exception class raised, or the body returned."""
    try:
        return pm.request("GET", url, timeout=urllib3.Timeout(connect=2, read=2)).data
    except urllib3.exceptions.HTTPError as exc:
        return type(exc)


@pytest.mark.parametrize("fault", sorted(_BROKEN_BODIES))
def test_front_door_preloads_a_body_as_urllib3_does(server: HTTPTestServer, fault: str) -> None:
    # The front door stands in for urllib3: a broken body fails as it does
    # there (on 1.26 too, where requests, reading in chunks, accepts a short one).
    server.behaviour = lambda req: Action(raw=_BROKEN_BODIES[fault])
    plain = _urllib3_outcome(urllib3.PoolManager(retries=Retry(False)), server.url + "/")
    guarded = _urllib3_outcome(
        az.PoolManager(config=CFG.replace(breaker=False), retries=Retry(False)), server.url + "/"
    )
    assert guarded == plain, (fault, plain, guarded)
    assert plain is urllib3.exceptions.ProtocolError


def test_breaker_gates_urlopen_once_per_call_and_opens(server: HTTPTestServer, clock: Clock) -> None:
    server.behaviour = lambda req: Action(status=503)
    cfg = CFG.replace(breaker_fail_max=2)
    pm = az.PoolManager(config=cfg, retries=Retry(total=3, status_forcelist=[503], backoff_factor=0, raise_on_status=False))
    assert pm.request("GET", server.url + "/").status == 503
    assert len(server.requests) == 4  # urllib3's own retries: still one outcome
    (breaker,) = registry().breakers()
    assert breaker.key == f"http://127.0.0.1:{server.port}"
    assert breaker.state == "closed"
    pm.request("GET", server.url + "/")
    assert breaker.state == "open"
    seen = len(server.requests)
    with pytest.raises(PoolCircuitOpenError) as info:
        pm.request("GET", server.url + "/")
    assert isinstance(info.value, urllib3.exceptions.HTTPError)
    assert isinstance(info.value, az.CircuitOpenError)
    assert len(server.requests) == seen


def test_a_success_on_a_fresh_connection_closes_the_front_doors_open_breaker(
    server: HTTPTestServer, clock: Clock
) -> None:
    # The adapter's rule, through the urllib3 front door: a request admitted
    # while closed ends well on a connection opened for it after the breaker
    # tripped; that proves the host reachable now.
    held, arrived = threading.Event(), threading.Event()

    def behaviour(req: Any) -> Action:
        if req.target == "/held":
            arrived.set()
            held.wait(10)
        return Action(close=True)  # every request then needs a fresh connection

    server.behaviour = behaviour
    pm = az.PoolManager(config=CFG.replace(breaker_fail_max=2), retries=Retry(False))
    assert pm.request("GET", server.url + "/").status == 200
    (breaker,) = registry().breakers()
    result: Dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(r=pm.request("GET", server.url + "/held")))
    t.start()
    assert arrived.wait(10)
    for _ in range(2):
        breaker.record_failure(breaker.admit(clock()), clock())
    assert breaker.state == "open"
    held.set()
    t.join(10)
    assert result["r"].status == 200
    assert breaker.state == "closed"


def test_breaker_counts_a_refused_host(clock: Clock) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens: refused
    pm = az.PoolManager(config=CFG.replace(breaker_fail_max=1), retries=Retry(False))
    with pytest.raises(urllib3.exceptions.NewConnectionError):
        pm.request("GET", f"http://127.0.0.1:{port}/")
    with pytest.raises(PoolCircuitOpenError):
        pm.request("GET", f"http://127.0.0.1:{port}/")


def test_proxy_from_url_is_guarded(server: HTTPTestServer) -> None:
    # The test server answers the absolute-form request itself, as a proxy would.
    pm = az.proxy_from_url(server.url, config=CFG)
    assert isinstance(pm, az.ProxyManager) and isinstance(pm, urllib3.ProxyManager)
    assert pm.request("GET", "http://example.invalid/x").data == b"ok"
    assert server.requests[0].target == "http://example.invalid/x"
    (sock,) = pooled_sockets(pm)
    assert read_options(sock)["SO_KEEPALIVE"] == 1
    (breaker,) = registry().breakers()
    assert breaker.key == "http://example.invalid:80"  # the target, not the proxy


def test_config_defaults_to_the_installed_one() -> None:
    with az.install(CFG, sdks=False):
        assert az.PoolManager().azguard_config is CFG
    assert az.PoolManager().azguard_config == az.GuardConfig.from_env({})


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(az.ConfigError, match="config"):
        az.PoolManager(config={"max_idle": 3})  # type: ignore[arg-type]


# -- install() reaches the SDKs, and uninstall() puts every name back --------------


def test_install_rebinds_botocore_and_uninstall_restores() -> None:
    httpsession = pytest.importorskip("botocore.httpsession")
    before = (httpsession.PoolManager, httpsession.proxy_from_url)
    assert before == (urllib3.PoolManager, urllib3.proxy_from_url)
    az.install(CFG)
    assert httpsession.PoolManager is az.PoolManager
    assert httpsession.proxy_from_url is az.proxy_from_url
    assert urllib3.PoolManager is urllib3.poolmanager.PoolManager  # urllib3 itself untouched
    assert "botocore.httpsession" in _install.sdk_modules_reached()
    assert az.uninstall() is True
    assert (httpsession.PoolManager, httpsession.proxy_from_url) == before


def test_install_rebinds_kubernetes_through_a_view_of_urllib3() -> None:
    rest = pytest.importorskip("kubernetes.client.rest")
    assert rest.urllib3 is urllib3
    az.install(CFG)
    view = rest.urllib3
    assert isinstance(view, _sdk.Urllib3View)
    assert view.PoolManager is az.PoolManager and view.ProxyManager is az.ProxyManager
    assert view.exceptions is urllib3.exceptions and view.Timeout is urllib3.Timeout
    assert urllib3.PoolManager is urllib3.poolmanager.PoolManager
    az.uninstall()
    assert rest.urllib3 is urllib3


def test_install_rebinds_azure_core_adapter_and_uninstall_restores() -> None:
    basic = pytest.importorskip("azure.core.pipeline.transport._requests_basic")
    original = basic.BiggerBlockSizeHTTPAdapter
    az.install(CFG)
    guarded = basic.BiggerBlockSizeHTTPAdapter
    assert issubclass(guarded, original) and issubclass(guarded, az.AzGuardAdapter)
    adapter = guarded(max_retries=Retry(total=False, redirect=False))
    assert adapter.azguard_config is CFG
    assert adapter.max_retries.total is False  # azure-core's own setting kept
    az.uninstall()
    assert basic.BiggerBlockSizeHTTPAdapter is original


def test_uninstall_refuses_to_undo_someone_elses_patch() -> None:
    httpsession = pytest.importorskip("botocore.httpsession")

    class Theirs(urllib3.PoolManager):
        pass

    az.install(CFG)
    httpsession.PoolManager = Theirs
    try:
        with pytest.raises(InstallConflictError, match="botocore.httpsession.PoolManager"):
            az.uninstall()
        # Nothing was undone: all names go back together or none does.
        assert httpsession.proxy_from_url is az.proxy_from_url
        assert requests.sessions.HTTPAdapter is _install._InstalledAdapter
    finally:
        httpsession.PoolManager = az.PoolManager
    assert az.uninstall() is True
    assert httpsession.PoolManager is urllib3.PoolManager


def test_install_requests_only_rebinds_no_sdk() -> None:
    httpsession = pytest.importorskip("botocore.httpsession")
    az.install(CFG, sdks=False)
    assert httpsession.PoolManager is urllib3.PoolManager
    assert _install.sdk_modules_reached() == []


def test_autostart_watches_the_modules_the_sdk_table_patches() -> None:
    from requests_azguard import _autostart

    assert set(_autostart._WITH_SDKS) == {"requests", *(t.module for t in _sdk.TARGETS)}


LATE = """
import json, sys
import requests_azguard as az
az.install()
mods = ["botocore.httpsession", "kubernetes.client.rest",
        "azure.core.pipeline.transport._requests_basic"]
import botocore.httpsession, kubernetes.client.rest
import azure.core.pipeline.transport._requests_basic as basic
import urllib3
bound = {
    "botocore": botocore.httpsession.PoolManager is az.PoolManager,
    "kubernetes": kubernetes.client.rest.urllib3.PoolManager is az.PoolManager,
    "azure": issubclass(basic.BiggerBlockSizeHTTPAdapter, az.AzGuardAdapter),
}
az.uninstall()
restored = {
    "botocore": botocore.httpsession.PoolManager is urllib3.PoolManager,
    "kubernetes": kubernetes.client.rest.urllib3 is urllib3,
    "azure": not issubclass(basic.BiggerBlockSizeHTTPAdapter, az.AzGuardAdapter),
}
print(json.dumps({"bound": bound, "restored": restored,
                  "hooks": [type(f).__name__ for f in sys.meta_path if "Hook" in type(f).__name__]}))
"""


def _need_sdks() -> None:
    for name in ("boto3", "kubernetes", "azure.core", "moto", "waitress"):
        pytest.importorskip(name)


def _child_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZGUARD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *sys.path])
    env.update(extra)
    return env


def test_sdk_imported_after_install_is_patched_when_imported(tmp_path: Path) -> None:
    _need_sdks()
    proc = subprocess.run(
        [sys.executable, "-c", LATE], env=_child_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["bound"] == {"botocore": True, "kubernetes": True, "azure": True}
    assert out["restored"] == {"botocore": True, "kubernetes": True, "azure": True}
    assert out["hooks"] == []  # uninstall() took the import finder out too


# -- the real SDKs under AZGUARD_AUTO=1, in fresh interpreters ----------------------


def run_client(sdk: str, url: str, auto: str) -> Dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(SDK_CLIENT), json.dumps({"sdk": sdk, "url": url})],
        env=_child_env(AZGUARD_AUTO=auto, AZGUARD_KEEPALIVE_IDLE="17s", AZGUARD_KEEPALIVE_COUNT="4"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == "", proc.stderr[-3000:]
    result: Dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _guarded_sockets(result: Dict[str, Any]) -> None:
    assert result["sockets"], result
    for opts in result["sockets"]:
        assert opts["SO_KEEPALIVE"] == 1 and opts["TCP_NODELAY"] == 1, opts
        if LINUX:
            assert (opts["TCP_KEEPIDLE"], opts["TCP_KEEPCNT"]) == (17, 4), opts


def test_boto3_s3_under_autostart_is_guarded() -> None:
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    pytest.importorskip("waitress")
    from sdk_servers import moto_s3

    with moto_s3() as url:
        guarded = run_client("boto3", url, "1")
        plain = run_client("boto3", url, "requests")
    assert guarded["azguard_imported"] is True  # the start-up hook, no code change
    assert guarded["manager"] == "requests_azguard._urllib3.PoolManager"
    # botocore's own pool and connection classes are kept, the guard under them.
    assert guarded["pool_mro"][:3] == [
        "GuardedAWSHTTPConnectionPool",
        "AWSHTTPConnectionPool",
        "GuardedHTTPConnectionPool",
    ]
    assert guarded["connection_mro"].index("AWSConnection") < guarded["connection_mro"].index(
        "GuardedConnection"
    )
    _guarded_sockets(guarded)
    # AZGUARD_AUTO=requests: botocore is not reached; its own keepalive only.
    assert plain["manager"] == "urllib3.poolmanager.PoolManager"
    if LINUX:
        assert all(o["TCP_KEEPIDLE"] != 17 for o in plain["sockets"]), plain


def test_kubernetes_list_namespace_under_autostart_is_guarded() -> None:
    pytest.importorskip("kubernetes")
    from sdk_servers import NAMESPACE_LIST, json_server

    server = json_server(NAMESPACE_LIST)
    try:
        guarded = run_client("kubernetes", server.url, "1")
        plain = run_client("kubernetes", server.url, "0")
    finally:
        server.close()
    assert guarded["names"] == ["default", "kube-system"]
    assert guarded["manager"] == "requests_azguard._urllib3.PoolManager"
    _guarded_sockets(guarded)
    assert plain["manager"] == "urllib3.poolmanager.PoolManager"
    assert plain["sockets"][0]["SO_KEEPALIVE"] == 0


def test_azure_core_pipeline_client_under_autostart_is_guarded() -> None:
    pytest.importorskip("azure.core")
    from sdk_servers import json_server

    server = json_server({"value": 1})
    try:
        guarded = run_client("azure", server.url, "1")
        plain = run_client("azure", server.url, "0")
    finally:
        server.close()
    assert guarded["bodies"] == ['{"value": 1}'] * 3
    assert guarded["transport"] == "RequestsTransport"
    assert guarded["adapter_mro"][:4] == [
        "GuardedBiggerBlockSizeHTTPAdapter",
        "BiggerBlockSizeHTTPAdapter",
        "_InstalledAdapter",
        "AzGuardAdapter",
    ]
    _guarded_sockets(guarded)
    assert plain["adapter"] == "BiggerBlockSizeHTTPAdapter"
    assert plain["sockets"][0]["SO_KEEPALIVE"] == 0


def test_env_command_says_which_libraries_are_reached(capsys: pytest.CaptureFixture[str]) -> None:
    from requests_azguard.tools import env as env_cmd

    assert env_cmd.main([], {"AZGUARD_AUTO": "1"}) == 0
    out = capsys.readouterr().out
    assert "libraries reached by install() / AZGUARD_AUTO=1:" in out
    assert f"requests    {requests.__version__}: requests.sessions.HTTPAdapter" in out
    assert env_cmd.main(["--json"], {"AZGUARD_AUTO": "requests"}) == 0
    reach = json.loads(capsys.readouterr().out)["AZGUARD_AUTO"]["reaches"]
    assert reach["requests"].endswith("requests.sessions.HTTPAdapter")
    for library in ("botocore", "kubernetes", "azure-core"):
        assert reach[library] in ("not installed", "not reached (AZGUARD_AUTO=requests)")


def test_auto_accepts_requests_and_says_what_it_accepts() -> None:
    from requests_azguard._config import describe_env

    (auto,) = [i for i in describe_env({"AZGUARD_AUTO": "Requests"}) if i.variable == "AZGUARD_AUTO"]
    assert auto.value == "requests"
    with pytest.raises(az.ConfigError, match="or requests"):
        describe_env({"AZGUARD_AUTO": "boto3"})


def test_run_keeps_a_requests_only_scope() -> None:
    from requests_azguard.tools import run as run_cmd

    assert run_cmd.child_environ({"AZGUARD_AUTO": "requests"})["AZGUARD_AUTO"] == "requests"
    assert run_cmd.child_environ({"AZGUARD_AUTO": "0"})["AZGUARD_AUTO"] == "1"
    assert run_cmd.child_environ({})["AZGUARD_AUTO"] == "1"
