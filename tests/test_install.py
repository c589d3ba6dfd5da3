"""install()/uninstall(): an exact, reversible patch of the name Session() uses.

Guarding is proven on real sockets (getsockopt on the connection a request
used), not by class names alone.
"""

from __future__ import annotations

import pickle
import socket
import warnings
from typing import Any, Dict, Iterator

import pytest
import requests
import requests.adapters
import requests.sessions
from pooled import pooled_sockets
from servers import HTTPTestServer
from sockopts import LINUX

import requests_azguard
from requests_azguard import AzGuardAdapter, ConfigError, GuardConfig
from requests_azguard import _install as inst

ORIGINAL = requests.sessions.HTTPAdapter
CFG = GuardConfig(keepalive_idle=17.0)
OTHER = GuardConfig(keepalive_idle=23.0)


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    assert requests.sessions.HTTPAdapter is ORIGINAL, "a previous test leaked its patch"
    yield
    # Put things back even when a test failed half-way, so failures stay local.
    requests.sessions.HTTPAdapter = ORIGINAL  # type: ignore[misc]
    if inst._state.sdk is not None:  # the SDK names install() rebound too
        inst._state.sdk.undo()
        inst._state.sdk = None
    inst._state.patch = None
    inst._state.config = None


def _read_back(sock: Any) -> Dict[str, int]:
    out = {"SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    if LINUX:
        out["TCP_KEEPIDLE"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    return out


def _get_socket_options(url: str) -> Dict[str, int]:
    """Module-level ``requests.get``; options of the socket it pooled.

    ``requests.get`` closes its Session on return, so the socket is read in a
    response hook, once the body is consumed and the connection is back in
    the pool (options tightened while a request is in flight are restored).
    """
    seen = []

    def grab(r: requests.Response, **kwargs: Any) -> None:
        r.content  # noqa: B018 - releases the connection to the pool
        seen.extend(_read_back(s) for s in pooled_sockets(r.connection))  # type: ignore[attr-defined]

    requests.get(url, timeout=5, hooks={"response": grab})
    assert len(seen) == 1, seen
    return seen[0]


def _session_socket_options(session: requests.Session, url: str) -> Dict[str, int]:
    session.get(url, timeout=5)
    socks = pooled_sockets(session.get_adapter(url))  # type: ignore[arg-type]
    assert len(socks) == 1, socks
    return _read_back(socks[0])


GUARDED = {"SO_KEEPALIVE": 1, **({"TCP_KEEPIDLE": 17} if LINUX else {})}


def test_module_level_get_is_guarded_and_uninstall_undoes_it(server: HTTPTestServer) -> None:
    assert _get_socket_options(server.url)["SO_KEEPALIVE"] == 0  # the control
    requests_azguard.install(CFG)
    assert _get_socket_options(server.url) == GUARDED
    assert requests_azguard.uninstall() is True
    assert _get_socket_options(server.url)["SO_KEEPALIVE"] == 0


def test_plain_session_is_guarded(server: HTTPTestServer) -> None:
    with requests_azguard.install(CFG):
        s = requests.Session()
        adapter = s.get_adapter(server.url)
        assert isinstance(adapter, AzGuardAdapter)
        assert adapter.azguard_config is CFG
        assert _session_socket_options(s, server.url) == GUARDED
    assert _session_socket_options(requests.Session(), server.url)["SO_KEEPALIVE"] == 0


def test_round_trip_restores_identity_and_touches_nothing_else() -> None:
    adapters_name = requests.adapters.HTTPAdapter
    handle = requests_azguard.install(CFG)
    assert requests.sessions.HTTPAdapter is not ORIGINAL
    assert issubclass(requests.sessions.HTTPAdapter, ORIGINAL)
    # The class AzGuardAdapter derives from is left alone: no recursion, and
    # third-party HTTPAdapter subclasses keep their base.
    assert requests.adapters.HTTPAdapter is adapters_name is ORIGINAL
    assert handle.active and inst.is_installed()
    assert handle.uninstall() is True
    assert requests.sessions.HTTPAdapter is ORIGINAL
    assert not handle.active and not inst.is_installed()
    assert handle.uninstall() is False
    assert requests_azguard.uninstall() is False


def test_double_install_is_harmless() -> None:
    first = requests_azguard.install(CFG)
    patched = requests.sessions.HTTPAdapter
    second = requests_azguard.install()
    assert requests.sessions.HTTPAdapter is patched
    assert second.config is CFG  # config=None keeps the active config
    # The second handle did not make the patch, so it does not undo it.
    assert second.uninstall() is False
    assert requests.sessions.HTTPAdapter is patched
    assert first.uninstall() is True
    assert requests.sessions.HTTPAdapter is ORIGINAL


def test_nested_install_with_a_config_swaps_it_and_puts_it_back() -> None:
    with requests_azguard.install(CFG):
        with requests_azguard.install(OTHER) as inner:
            assert inner.config is OTHER
            assert requests.Session().get_adapter("http://x/").azguard_config is OTHER  # type: ignore[attr-defined]
        assert requests.Session().get_adapter("http://x/").azguard_config is CFG  # type: ignore[attr-defined]
    assert requests.sessions.HTTPAdapter is ORIGINAL


def test_stale_handle_cannot_undo_a_later_install() -> None:
    old = requests_azguard.install(CFG)
    requests_azguard.uninstall()
    requests_azguard.install(OTHER)
    assert old.uninstall() is False
    assert inst.is_installed()
    assert requests.Session().get_adapter("http://x/").azguard_config is OTHER  # type: ignore[attr-defined]


class TheirAdapter(requests.adapters.HTTPAdapter):
    pass


def test_uninstall_refuses_to_clobber_a_later_patch() -> None:
    requests_azguard.install(CFG)
    ours = requests.sessions.HTTPAdapter
    requests.sessions.HTTPAdapter = TheirAdapter  # type: ignore[misc]
    with pytest.raises(inst.InstallConflictError) as info:
        requests_azguard.uninstall()
    message = str(info.value)
    assert f"{__name__}.TheirAdapter" in message
    assert "requests.adapters.HTTPAdapter" in message  # what it would restore
    assert requests.sessions.HTTPAdapter is TheirAdapter
    # A second install() while someone else holds the name warns, changes nothing.
    with pytest.warns(RuntimeWarning, match="TheirAdapter"):
        requests_azguard.install()
    assert requests.sessions.HTTPAdapter is TheirAdapter
    # Once they undo their patch, ours is undone exactly.
    requests.sessions.HTTPAdapter = ours  # type: ignore[misc]
    assert requests_azguard.uninstall() is True
    assert requests.sessions.HTTPAdapter is ORIGINAL


def test_uninstall_restores_a_patch_that_was_there_before() -> None:
    requests.sessions.HTTPAdapter = TheirAdapter  # type: ignore[misc]
    requests_azguard.install(CFG)
    assert requests.sessions.HTTPAdapter is not TheirAdapter
    requests_azguard.uninstall()
    assert requests.sessions.HTTPAdapter is TheirAdapter


def test_bad_config_patches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="GuardConfig"):
        requests_azguard.install("max_idle=3")  # type: ignore[arg-type]
    monkeypatch.setenv("AZGUARD_MAX_IDLE", "soon")
    with pytest.raises(ConfigError, match="AZGUARD_MAX_IDLE"):
        requests_azguard.install()
    monkeypatch.setenv("AZGUARD_MAX_IDLE", "5")
    monkeypatch.setenv("AZGUARD_AUTO", "sometimes")
    with pytest.raises(ConfigError, match="AZGUARD_AUTO"):
        requests_azguard.install()
    assert requests.sessions.HTTPAdapter is ORIGINAL


def test_config_from_env_with_auto_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The AZGUARD_AUTO=1 hook calls install() with AUTO in the environment."""
    monkeypatch.setenv("AZGUARD_AUTO", "1")
    monkeypatch.setenv("AZGUARD_MAX_IDLE", "7s")
    with requests_azguard.install() as handle:
        assert handle.config.max_idle == 7.0


def test_guarded_session_pickles() -> None:
    with requests_azguard.install(CFG):
        s = requests.Session()
    clone = pickle.loads(pickle.dumps(s))
    adapter = clone.get_adapter("https://x/")
    assert isinstance(adapter, AzGuardAdapter)
    assert adapter.azguard_config == CFG


def test_sessions_made_while_installed_stay_guarded() -> None:
    with requests_azguard.install(CFG):
        s = requests.Session()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(s.get_adapter("http://x/"), AzGuardAdapter)
