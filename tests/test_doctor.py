"""``azguard doctor``: one guarded request against real local servers, read back."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from servers import HTTPTestServer, free_port

from requests_azguard import GuardConfig, _watchdog
from requests_azguard._config import ENV_VARS
from requests_azguard.tools import doctor
from requests_azguard.tools.doctor import advise, read_sysctls, retries2_seconds

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sockopts")

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ENV_VARS, *PROXY_VARS, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Tuple[int, str, str]:
    code = doctor.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def https_server(tls_pair: Tuple[ssl.SSLContext, str]) -> Iterator[HTTPTestServer]:
    with HTTPTestServer(tls=tls_pair[0]) as srv:
        yield srv


# ---------------------------------------------------------------- live requests


@linux_only
def test_text_report_reads_back_the_configured_keepalive(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZGUARD_KEEPALIVE_IDLE", "45s")
    monkeypatch.setenv("AZGUARD_KEEPALIVE_INTERVAL", "7s")
    monkeypatch.setenv("AZGUARD_KEEPALIVE_COUNT", "4")
    monkeypatch.setenv("AZGUARD_USER_TIMEOUT", "20s")
    with HTTPTestServer() as srv:
        code, out, err = run(capsys, srv.url + "/")
        local_port = srv.peers[0][1]
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"azguard doctor {srv.url}/"

    def row(prefix: str) -> str:
        (line,) = [x for x in lines if x.strip().startswith(prefix)]
        return line.split(None, 1)[1]

    assert row("answer") == "HTTP 200 X"
    assert row("resolved") == "127.0.0.1"
    assert row("peer") == f"127.0.0.1:{srv.port}"
    assert row("local") == f"127.0.0.1:{local_port}"  # the server saw this very socket
    assert row("tls") == "none"
    assert row("SO_KEEPALIVE").startswith("1")
    assert row("TCP_KEEPIDLE").startswith("45 s")
    assert row("TCP_KEEPINTVL").startswith("7 s")
    assert row("TCP_KEEPCNT").startswith("4")
    assert row("TCP_USER_TIMEOUT").startswith("20000 ms")
    assert "state ESTABLISHED" in out
    assert "health healthy" in out or "health degraded" in out
    assert "net.ipv4.tcp_retries2" in out and "net.ipv4.tcp_keepalive_time" in out
    assert "no default timeout" in out  # AZGUARD_DEFAULT_TIMEOUT unset


@linux_only
def test_https_json_is_machine_readable(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    https_server: HTTPTestServer,
    tls_pair: Tuple[ssl.SSLContext, str],
) -> None:
    monkeypatch.setenv("AZGUARD_KEEPALIVE_IDLE", "300")  # longer than Azure's 240 s
    monkeypatch.setenv("AZGUARD_DEFAULT_TIMEOUT", "5,60")
    code, out, err = run(capsys, https_server.url + "/x", "--json", "--cacert", tls_pair[1])
    assert code == 0, err
    report: Dict[str, Any] = json.loads(out)
    assert report["ok"] is True and report["status"] == 200
    assert report["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert report["tls"]["cipher"]
    assert report["peer"] == f"127.0.0.1:{https_server.port}"
    assert report["resolved"] == ["127.0.0.1"]
    opts = report["socket_options"]
    assert opts["SO_KEEPALIVE"] == 1 and opts["TCP_KEEPIDLE"] == 300
    assert report["tcp_info"]["state_name"] == "ESTABLISHED"
    assert report["tcp_info"]["rtt"] > 0
    assert report["health"] in ("healthy", "degraded", "unhealthy")
    assert report["base_rto_s"] >= 0.2
    t = report["timings"]
    for key in ("dns_s", "tcp_connect_s", "tls_s", "first_byte_s", "total_s"):
        assert isinstance(t[key], float) and t[key] >= 0, key
    assert t["total_s"] >= t["first_byte_s"]
    assert set(report["sysctl"]) >= {
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_retries2",
        "net.ipv4.tcp_timestamps",
        "net.ipv4.tcp_tw_reuse",
    }
    assert report["config"]["keepalive_idle_s"] == 300.0
    (idle_warning,) = [w for w in report["warnings"] if "keepalive idle" in w]
    assert "Azure load balancer (240 s)" in idle_warning
    assert "AWS NAT gateway" not in idle_warning
    assert not any("no default timeout" in w for w in report["warnings"])


def test_insecure_skips_verification_and_unverified_fails_cleanly(
    capsys: pytest.CaptureFixture[str], https_server: HTTPTestServer
) -> None:
    code, out, err = run(capsys, https_server.url + "/", "--insecure", "--json")
    assert code == 0, err
    assert json.loads(out)["tls"]["version"].startswith("TLS")
    code, out, err = run(capsys, https_server.url + "/")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "TLS" in err and "CERTIFICATE_VERIFY_FAILED" in err.upper().replace(" ", "_")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["not a url"], "not an http:// or https:// URL"),
        (["ftp://127.0.0.1/"], "not an http:// or https:// URL"),
        (["http://"], "has no host"),
        (["http://[::1"], "not a valid URL"),
        (["http://127.0.0.1:99999/"], "invalid port"),
        (["http://127.0.0.1/", "--timeout", "soon"], "--timeout"),
        (["https://127.0.0.1/", "--insecure", "--cacert", "x.pem"], "contradict"),
        (["https://127.0.0.1/", "--cacert", "/nonexistent/ca.pem"], "no such file"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: List[str], needle: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("azguard doctor: ") and needle in err
    assert len(err.strip().splitlines()) == 1


def test_refused_port_exits_2_and_json_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    code, out, err = run(capsys, url, "--json")
    assert code == 2
    assert json.loads(out) == {"ok": False, "error": err.strip()[len("azguard doctor: ") :]}
    assert "ECONNREFUSED" in err and url in err


def test_bad_environment_exits_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZGUARD_KEEPALIVE_IDLE", "abc")
    code, _, err = run(capsys, "http://127.0.0.1:1/")
    assert code == 2 and "AZGUARD_KEEPALIVE_IDLE" in err and "'abc'" in err


def subprocess_env() -> Dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith("AZGUARD_") and k not in PROXY_VARS
    }


def test_cli_in_a_real_process() -> None:
    with HTTPTestServer() as srv:
        proc = subprocess.run(
            [sys.executable, "-m", "requests_azguard", "doctor", srv.url + "/", "--json"],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == 200 and report["peer"] == f"127.0.0.1:{srv.port}"
    bad = subprocess.run(
        [sys.executable, "-m", "requests_azguard", "doctor", "http://[::1"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- pure parts


def healthy_opts(**over: int) -> Dict[str, Any]:
    opts: Dict[str, Any] = {
        "SO_KEEPALIVE": 1,
        "TCP_NODELAY": 1,
        "TCP_KEEPIDLE": 30,
        "TCP_KEEPINTVL": 10,
        "TCP_KEEPCNT": 3,
        "TCP_USER_TIMEOUT": 30000,
    }
    opts.update(over)
    return opts


SYSCTL = {"net.ipv4.tcp_retries2": 15}


def test_advise_nothing_for_a_protective_configuration() -> None:
    cfg = GuardConfig(default_timeout=(5.0, 60.0))
    assert advise(cfg, healthy_opts(), SYSCTL) == []


@pytest.mark.parametrize(
    "idle, named, not_named",
    [
        (239, [], ["Azure"]),
        (240, ["Azure load balancer (240 s)"], ["AWS"]),
        (350, ["Azure", "AWS NAT gateway (350 s)"], ["GCP"]),
        (600, ["Azure", "AWS", "GCP load balancer / Cloud NAT (600 s)"], []),
    ],
)
def test_advise_keepalive_idle_against_middlebox_timeouts(
    idle: int, named: List[str], not_named: List[str]
) -> None:
    cfg = GuardConfig(default_timeout=(5.0, 60.0), keepalive_idle=float(idle))
    found = " ".join(advise(cfg, healthy_opts(TCP_KEEPIDLE=idle), SYSCTL))
    for text in named:
        assert text in found
    for text in not_named:
        assert text not in found


def test_advise_reads_the_socket_not_only_the_config() -> None:
    cfg = GuardConfig(default_timeout=(5.0, 60.0))  # asks for 30 s idle
    found = advise(cfg, healthy_opts(TCP_KEEPIDLE=7200), SYSCTL)
    assert any("keepalive idle 7200 s" in w for w in found)
    found = advise(cfg, healthy_opts(SO_KEEPALIVE=0), SYSCTL)
    assert any("SO_KEEPALIVE is not set on the live socket" in w for w in found)


def test_advise_each_unprotected_setting() -> None:
    cfg = GuardConfig(keepalive=False, user_timeout=None, ack_timeout=None, max_idle=None)
    opts = healthy_opts(SO_KEEPALIVE=0, TCP_USER_TIMEOUT=0)
    found = advise(cfg, opts, SYSCTL)
    text = "\n".join(found)
    assert "keepalive is off" in text
    assert "TCP_USER_TIMEOUT is off" in text and "about 15 min (tcp_retries2=15)" in text
    assert "no default timeout" in text
    assert "black-hole watchdog is off" in text
    assert "max_idle off" in text
    assert len(found) == 5


def test_advise_reports_an_unhealthy_grade() -> None:
    from test_tcpinfo import info_with

    tcp = info_with(state=8, rtt=1000, retransmits=0, probes=0)
    cfg = GuardConfig(default_timeout=(5.0, 60.0))
    found = advise(cfg, healthy_opts(), SYSCTL, tcp, "unhealthy")
    assert any("grades this connection unhealthy: state CLOSE_WAIT" in w for w in found)


def test_retries2_seconds_matches_the_kernel_model() -> None:
    # 0.2 s doubling to 102.4 s (10 steps), then six more at the 120 s cap.
    assert retries2_seconds(15) == pytest.approx(924.6)
    assert retries2_seconds(0) == pytest.approx(0.2)
    assert retries2_seconds(3) == pytest.approx(0.2 + 0.4 + 0.8 + 1.6)


def test_read_sysctls_from_a_given_root(tmp_path: Path) -> None:
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "ipv4" / "tcp_retries2").write_text("8\n")
    (tmp_path / "net" / "ipv4" / "tcp_tw_reuse").write_text("garbage\n")
    found = read_sysctls(str(tmp_path))
    assert found["net.ipv4.tcp_retries2"] == 8
    assert found["net.ipv4.tcp_tw_reuse"] is None
    assert found["net.ipv4.tcp_keepalive_time"] is None


@linux_only
def test_doctor_describes_the_in_flight_watchdog(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZGUARD_ACK_TIMEOUT", raising=False)
    with HTTPTestServer() as srv:
        code, out, _ = run(capsys, srv.url + "/", "--json")
        assert code == 0
        dog = json.loads(out)["watchdog"]
        assert dog["verdict_after_unanswered_probes"] == _watchdog.VERDICT_PROBES
        assert dog["probe_after_s"] == _watchdog.PROBE_AFTER
        monkeypatch.setenv("AZGUARD_ACK_TIMEOUT", "off")
        code, out, _ = run(capsys, srv.url + "/")
    assert code == 0
    assert "in-flight watchdog (replayable requests)\n  off" in out
