"""Options read back with getsockopt from real connections to local servers."""

from __future__ import annotations

import ssl
from typing import Dict, Tuple

import pytest
import requests
from pooled import pooled_sockets
from servers import HTTPTestServer, ProxyServer
from sockopts import LINUX, read_options

import requests_azguard
from requests_azguard import AzGuardAdapter, GuardConfig

CFG = GuardConfig(keepalive_idle=17.0, keepalive_interval=3.0, keepalive_count=6, user_timeout=11.0)
EXPECTED = {"SO_KEEPALIVE": 1, "TCP_NODELAY": 1}
if LINUX:
    EXPECTED.update(TCP_KEEPIDLE=17, TCP_KEEPINTVL=3, TCP_KEEPCNT=6, TCP_USER_TIMEOUT=11000)


def _only_socket_options(adapter: AzGuardAdapter) -> Dict[str, int]:
    socks = pooled_sockets(adapter)
    assert len(socks) == 1, socks
    return read_options(socks[0])


def test_plain_http(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    assert s.get(server.url + "/a", timeout=5).text == "ok"
    assert _only_socket_options(s.get_adapter(server.url)) == EXPECTED  # type: ignore[arg-type]


def test_plain_requests_sets_no_keepalive(server: HTTPTestServer) -> None:
    """The control: without the adapter the same read-back shows no keepalive."""
    s = requests.Session()
    s.get(server.url, timeout=5)
    opts = read_options(pooled_sockets(s.get_adapter(server.url))[0])  # type: ignore[arg-type]
    assert opts["SO_KEEPALIVE"] == 0


def test_https(tls_pair: Tuple[ssl.SSLContext, str]) -> None:
    ctx, ca = tls_pair
    with HTTPTestServer(tls=ctx) as srv:
        s = requests_azguard.mount(requests.Session(), CFG)
        assert s.get(srv.url, verify=ca, timeout=5).text == "ok"
        assert _only_socket_options(s.get_adapter(srv.url)) == EXPECTED  # type: ignore[arg-type]


def test_through_http_proxy(server: HTTPTestServer) -> None:
    with ProxyServer() as proxy:
        s = requests_azguard.mount(requests.Session(), CFG)
        r = s.get(server.url + "/p", proxies={"http": proxy.url}, timeout=5)
        assert r.text == "ok"
        assert proxy.forwarded == 1
        assert _only_socket_options(s.get_adapter(server.url)) == EXPECTED  # type: ignore[arg-type]


def test_through_connect_tunnel(tls_pair: Tuple[ssl.SSLContext, str]) -> None:
    ctx, ca = tls_pair
    with HTTPTestServer(tls=ctx) as srv, ProxyServer() as proxy:
        s = requests_azguard.mount(requests.Session(), CFG)
        r = s.get(srv.url, proxies={"https": proxy.url}, verify=ca, timeout=5)
        assert r.text == "ok"
        assert proxy.tunnels == 1
        assert _only_socket_options(s.get_adapter(srv.url)) == EXPECTED  # type: ignore[arg-type]


def test_keepalive_off_leaves_socket_alone(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG.replace(keepalive=False))
    s.get(server.url, timeout=5)
    opts = _only_socket_options(s.get_adapter(server.url))  # type: ignore[arg-type]
    assert opts["SO_KEEPALIVE"] == 0 and opts["TCP_NODELAY"] == 1


def test_connections_are_reused(server: HTTPTestServer) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    for _ in range(5):
        s.get(server.url, timeout=5)
    assert server.accepted == 1


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "HEAD"])
def test_methods_and_bodies_round_trip(server: HTTPTestServer, method: str) -> None:
    s = requests_azguard.mount(requests.Session(), CFG)
    r = s.request(
        method, server.url + "/m", data=b"x" * 10 if method != "HEAD" else None, timeout=5
    )
    assert r.status_code == 200
    assert server.requests[-1].method == method


def test_mount_mounts_one_adapter_on_both_schemes() -> None:
    s = requests_azguard.mount(requests.Session(), CFG, pool_maxsize=3)
    a, b = s.adapters["http://"], s.adapters["https://"]
    assert a is b and isinstance(a, AzGuardAdapter)
    assert a._pool_maxsize == 3
    with pytest.raises(requests_azguard.ConfigError, match="session"):
        requests_azguard.mount(object(), CFG)  # type: ignore[arg-type]
