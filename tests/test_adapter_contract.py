"""HTTPAdapter and urllib3 contracts the adapter must keep."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import requests
import urllib3.poolmanager
from requests.adapters import HTTPAdapter
from servers import HTTPTestServer
from urllib3.util.retry import Retry

from requests_azguard import AzGuardAdapter, ConfigError, GuardConfig
from requests_azguard._pool import AzHTTPConnectionPool, AzHTTPSConnectionPool


def test_pickle_round_trip_keeps_configuration(server: HTTPTestServer) -> None:
    cfg = GuardConfig(max_idle=7.0, keepalive_idle=12.0, retries=5)
    adapter = AzGuardAdapter(cfg, pool_connections=3, pool_maxsize=4, pool_block=True)
    copy = pickle.loads(pickle.dumps(adapter))
    assert copy.azguard_config == cfg
    assert (copy._pool_connections, copy._pool_maxsize, copy._pool_block) == (3, 4, True)
    assert copy.max_retries.total == 5
    assert isinstance(copy.poolmanager, type(adapter.poolmanager))
    assert copy.poolmanager.azguard_socket_options == adapter.azguard_socket_options()
    s = requests.Session()
    s.mount("http://", copy)
    assert s.get(server.url, timeout=5).text == "ok"


def test_module_level_pool_classes_untouched() -> None:
    before = dict(urllib3.poolmanager.pool_classes_by_scheme)
    adapter = AzGuardAdapter(GuardConfig())
    assert adapter.poolmanager.pool_classes_by_scheme == {
        "http": AzHTTPConnectionPool,
        "https": AzHTTPSConnectionPool,
    }
    assert (
        adapter.poolmanager.pool_classes_by_scheme is not urllib3.poolmanager.pool_classes_by_scheme
    )
    assert urllib3.poolmanager.pool_classes_by_scheme == before
    assert urllib3.poolmanager.pool_classes_by_scheme["http"] is urllib3.HTTPConnectionPool
    plain = HTTPAdapter()
    assert plain.poolmanager.pool_classes_by_scheme["http"] is urllib3.HTTPConnectionPool


def test_honours_every_httpadapter_argument() -> None:
    retry = Retry(total=2, backoff_factor=0.5)
    adapter = AzGuardAdapter(
        GuardConfig(), pool_connections=2, pool_maxsize=9, max_retries=retry, pool_block=True
    )
    # Every setting of the caller's Retry is kept; the guard's replay rules are added.
    assert vars(retry).items() <= vars(adapter.max_retries).items()
    assert adapter.max_retries.backoff_factor == 0.5
    assert isinstance(adapter.max_retries, Retry)
    assert adapter.poolmanager.connection_pool_kw["maxsize"] == 9
    assert adapter.poolmanager.connection_pool_kw["block"] is True
    assert adapter.poolmanager.pools._maxsize == 2  # num_pools
    assert AzGuardAdapter(GuardConfig(), max_retries=0).max_retries.total == 0


def test_default_retries_come_from_config() -> None:
    assert AzGuardAdapter(GuardConfig(retries=4)).max_retries.total == 4


def test_config_none_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZGUARD_MAX_IDLE", "9s")
    assert AzGuardAdapter().azguard_config.max_idle == 9.0
    monkeypatch.setenv("AZGUARD_MAX_IDLE", "bogus")
    with pytest.raises(ConfigError, match="AZGUARD_MAX_IDLE"):
        AzGuardAdapter()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ConfigError, match="config"):
        AzGuardAdapter({"max_idle": 3})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fallback"):
        AzGuardAdapter(GuardConfig(), fallback=503)  # type: ignore[arg-type]


def test_is_an_httpadapter_and_keeps_its_attrs() -> None:
    adapter = AzGuardAdapter(GuardConfig())
    assert isinstance(adapter, HTTPAdapter)
    assert set(HTTPAdapter.__attrs__) <= set(AzGuardAdapter.__attrs__)
    assert adapter.config == {}  # HTTPAdapter's own dict, not the GuardConfig
    state = adapter.__getstate__()
    assert state["azguard_config"] is adapter.azguard_config


def test_pool_kwargs_pass_through() -> None:
    class Sub(AzGuardAdapter):
        def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            kwargs["source_address"] = ("127.0.0.1", 0)
            super().init_poolmanager(*args, **kwargs)

    manager = Sub(GuardConfig()).poolmanager
    assert manager.connection_pool_kw["source_address"] == ("127.0.0.1", 0)
    assert manager.azguard_socket_options  # the guard's options are still there


def test_default_timeout_applies_only_without_explicit_timeout() -> None:
    seen = []

    class Spy(AzGuardAdapter):
        def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
            return super().send(request, **kwargs)

    import requests.adapters as ra

    orig = ra.HTTPAdapter.send

    def capture(self, request, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs.get("timeout"))
        raise requests.ConnectionError("captured")

    ra.HTTPAdapter.send = capture  # type: ignore[method-assign]
    try:
        s = requests.Session()
        s.mount("http://", Spy(GuardConfig(default_timeout=(1.5, 9.0))))
        for kwargs in ({}, {"timeout": 3}):
            with pytest.raises(requests.ConnectionError):
                s.get("http://127.0.0.1:9/", **kwargs)
    finally:
        ra.HTTPAdapter.send = orig  # type: ignore[method-assign]
    # A stream=False request's timeout reaches requests as the Timeout that
    # also tells the pool to read the body inside urlopen (_pool.PreloadTimeout).
    assert [(t.connect_timeout, t.read_timeout) for t in seen] == [(1.5, 9.0), (3, 3)]


def test_socket_options_reach_pools_but_not_the_pool_key() -> None:
    adapter = AzGuardAdapter(GuardConfig())
    manager = adapter.poolmanager
    # Left out of connection_pool_kw, which urllib3 hashes into the pool key
    # on every request; every pool gets them when it is built.
    assert "socket_options" not in manager.connection_pool_kw
    pool = manager.connection_from_host("127.0.0.1", 1, "http")
    assert pool.conn_kw["socket_options"] == adapter.azguard_socket_options()
    # A caller's own per-pool options still win.
    own = [(6, 1, 1)]
    other = manager.connection_from_host(
        "127.0.0.1", 2, "http", pool_kwargs={"socket_options": own}
    )
    assert other.conn_kw["socket_options"] == own
    proxied = adapter.proxy_manager_for("http://127.0.0.1:3")
    assert "socket_options" not in proxied.connection_pool_kw
    assert (
        proxied.connection_from_host("example.invalid", 80, "http").conn_kw["socket_options"]
        == adapter.azguard_socket_options()
    )


@pytest.mark.parametrize(
    "timeout", [(1, 2, 3), ("fast", 2), -1, object()], ids=["triple", "text", "negative", "object"]
)
def test_a_bad_timeout_fails_as_it_does_with_plain_requests(timeout: Any) -> None:
    def error(adapter: requests.adapters.HTTPAdapter) -> BaseException:
        s = requests.Session()
        s.mount("http://", adapter)
        with pytest.raises(Exception) as info:
            s.get("http://127.0.0.1:9/", timeout=timeout)
        return info.value

    plain, guarded = error(requests.adapters.HTTPAdapter()), error(AzGuardAdapter(GuardConfig()))
    assert type(guarded) is type(plain)
    assert str(guarded) == str(plain)
