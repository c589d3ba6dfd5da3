"""``azguard doctor`` findings a newcomer hit: TLS failures labelled as TLS,
a server without keep-alive reported as such, rounded JSON; ``azguard --help``."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any, Iterator, Tuple

import pytest
from servers import Action, HTTPTestServer

from requests_azguard._config import ENV_VARS
from requests_azguard.tools import cli, doctor


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ENV_VARS, "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Tuple[int, str, str]:
    code = doctor.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def plain_http_port() -> Iterator[int]:
    """A raw plain-HTTP server: answers anything (a TLS ClientHello too) with 400."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    thread.join(5)


def test_https_against_plain_http_is_a_tls_failure(
    capsys: pytest.CaptureFixture[str], plain_http_port: int
) -> None:
    code, out, err = run(capsys, f"https://127.0.0.1:{plain_http_port}/")
    assert code == 2 and out == ""
    assert "TLS" in err and "WRONG_VERSION_NUMBER" in err
    assert "EPERM" not in err


def walk_floats(value: Any) -> Iterator[float]:
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from walk_floats(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_floats(v)


def test_keep_alive_server_json_is_rounded(
    capsys: pytest.CaptureFixture[str], server: HTTPTestServer
) -> None:
    code, out, err = run(capsys, server.url + "/", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["keep_alive"] is True
    assert not any("no keep-alive" in w for w in report["warnings"])
    floats = list(walk_floats(report))
    assert floats  # timings at least
    assert all(round(f, 6) == f for f in floats), floats


def test_server_without_keep_alive_is_a_finding(capsys: pytest.CaptureFixture[str]) -> None:
    with HTTPTestServer(lambda req: Action(close=True, headers={"Connection": "close"})) as srv:
        code, out, err = run(capsys, srv.url + "/", "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["keep_alive"] is False
        assert any("no keep-alive" in w for w in report["warnings"])
        code, out, err = run(capsys, srv.url + "/")
    assert code == 0, err
    assert "n/a (no live socket" not in out
    assert "socket options (getsockopt on the live socket" not in out
    assert "no keep-alive" in out


def test_rounded_leaves_other_values_alone() -> None:
    assert doctor.rounded({"a": [0.20001300000000002, 3, None, "x"]}) == {
        "a": [0.200013, 3, None, "x"]
    }


def test_azguard_help_lists_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--version" in out and "--help" in out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("azguard ")
