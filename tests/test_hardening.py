"""Issue 17: values the kernel rejects, Redis URLs and passwords, Redis losing
its data.  Real loopback sockets (options read back with getsockopt), a real
redis-server, the real CLI in subprocesses."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from typing import Any, Dict

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pooled import pooled_sockets
from recorder import Recorder
from redis_fixtures import RedisServer, redis_server  # noqa: F401 - fixture
from servers import Action, HTTPTestServer
from sockopts import LINUX, read_options

from requests_azguard import CircuitOpenError, ConfigError, GuardConfig, mount
from requests_azguard._breaker import OPEN
from requests_azguard._breaker_registry import registry, reset_breakers
from requests_azguard._config import (
    MAX_DURATION_SECONDS,
    MAX_KEEPALIVE_COUNT,
    MAX_KEEPALIVE_SECONDS,
    describe_env,
)
from requests_azguard._keepalive import reset_probes, usable_options
from requests_azguard._redact import redact_url, scrub

# -- 1. values the kernel rejects ------------------------------------------------


@pytest.mark.parametrize(
    "variable, raw, accepted",
    [
        ("AZGUARD_KEEPALIVE_IDLE", "10h", "at most 32767 s"),
        ("AZGUARD_KEEPALIVE_IDLE", "32768", "at most 32767 s"),
        ("AZGUARD_KEEPALIVE_INTERVAL", "32768", "at most 32767 s"),
        ("AZGUARD_KEEPALIVE_COUNT", "128", "from 1 to 127"),
        ("AZGUARD_USER_TIMEOUT", "100000h", "at most 2147483 s"),
        ("AZGUARD_ACK_TIMEOUT", "100000h", "at most 32767 s"),
        ("AZGUARD_MAX_AGE", "100000h", "at most 2147483 s"),
        ("AZGUARD_DEFAULT_TIMEOUT", "5,100000h", "connect,read"),
        ("AZGUARD_RETRIES", "9" * 5000, "from 0 to 100"),
        ("AZGUARD_BREAKER_FAIL_MAX", "1" * 5000, "from 1 to 1000000"),
        ("AZGUARD_MAX_IDLE", "1" * 5000, "at most"),
        ("AZGUARD_METRICS_PORT", "9" * 5000, "from 1 to 65535"),
    ],
)
def test_kernel_limits_are_config_errors_naming_the_range(
    variable: str, raw: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        describe_env({variable: raw})
    message = str(info.value)
    assert variable in message and accepted in message
    assert len(message) < 400  # a 5000-digit value is not echoed whole


@pytest.mark.parametrize(
    "field, value",
    [
        ("keepalive_idle", 32768),
        ("keepalive_interval", 10 * 3600.0),
        ("keepalive_count", 128),
        ("user_timeout", 100000 * 3600.0),
        ("ack_timeout", 100000 * 3600.0),
        ("max_idle", 10**5000),
        ("breaker_reset_timeout", float("inf")),
        ("retries", 10**5000),
        ("health_rtt_degraded", 10**400),
        ("default_timeout", (5.0, 1e12)),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_python_values_past_the_limits_are_config_errors(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        GuardConfig(**{field: value})
    assert f"GuardConfig.{field}" in str(info.value)
    assert len(str(info.value)) < 400


def test_the_largest_accepted_values_work_on_a_real_connection(server: HTTPTestServer) -> None:
    config = GuardConfig(
        keepalive_idle=MAX_KEEPALIVE_SECONDS,
        keepalive_interval=MAX_KEEPALIVE_SECONDS,
        keepalive_count=MAX_KEEPALIVE_COUNT,
        user_timeout=MAX_DURATION_SECONDS,
        ack_timeout=MAX_KEEPALIVE_SECONDS,
        default_timeout=(MAX_DURATION_SECONDS, MAX_DURATION_SECONDS),
        breaker=False,
    )
    with mount(requests.Session(), config) as s:
        for _ in range(2):  # the second request reuses the connection, tightened
            assert s.get(server.url).text == "ok"
        (sock,) = pooled_sockets(s.get_adapter(server.url))
        opts = read_options(sock)
    assert opts["SO_KEEPALIVE"] == 1
    if LINUX:
        assert opts["TCP_KEEPIDLE"] == MAX_KEEPALIVE_SECONDS
        assert opts["TCP_KEEPINTVL"] == MAX_KEEPALIVE_SECONDS
        assert opts["TCP_KEEPCNT"] == MAX_KEEPALIVE_COUNT
        assert opts["TCP_USER_TIMEOUT"] == int(MAX_DURATION_SECONDS * 1000)


_durations = st.floats(min_value=0.001, max_value=MAX_DURATION_SECONDS)
_keepalive = st.floats(min_value=0.001, max_value=MAX_KEEPALIVE_SECONDS)


@settings(
    max_examples=60,
    deadline=None,
    database=None,  # no .hypothesis directory in the worktree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    idle=_keepalive,
    interval=_keepalive,
    count=st.integers(1, MAX_KEEPALIVE_COUNT),
    user_timeout=st.none() | _durations,
    ack_timeout=st.none() | _keepalive,
    max_idle=st.none() | _durations,
    max_age=st.none() | _durations,
    default_timeout=st.none()
    | st.tuples(st.floats(1.0, MAX_DURATION_SECONDS), st.floats(1.0, MAX_DURATION_SECONDS)),
    retries=st.integers(0, 100),
    fail_max=st.integers(1, 1_000_000),
    reset_timeout=_durations,
    dns_recheck=st.none() | _durations,
    others=st.fixed_dictionaries(
        {
            "keepalive": st.booleans(),
            "breaker": st.booleans(),
            "retry_non_idempotent": st.sampled_from(["unsent", "never", "always"]),
            # The server answers 200, which must not count against it here.
            "breaker_statuses": st.frozensets(
                st.integers(100, 599).filter(lambda c: c != 200), min_size=1, max_size=5
            ),
            "timeout_fail_fast": st.integers(0, 1_000_000),
            "fallback_status": st.none() | st.integers(400, 599),
            "health_retrans_degraded": st.integers(0, 2**31 - 1),
            "health_retrans_unhealthy": st.integers(0, 2**31 - 1),
            "health_rtt_unhealthy": st.floats(MAX_DURATION_SECONDS / 2, MAX_DURATION_SECONDS),
            "health_rtt_degraded": st.floats(0.001, MAX_DURATION_SECONDS / 2),
        }
    ),
)
def test_every_accepted_value_opens_a_real_connection_carrying_it(
    server: HTTPTestServer,
    idle: float,
    interval: float,
    count: int,
    user_timeout: Any,
    ack_timeout: Any,
    max_idle: Any,
    max_age: Any,
    default_timeout: Any,
    retries: int,
    fail_max: int,
    reset_timeout: float,
    dns_recheck: Any,
    others: Dict[str, Any],
) -> None:
    reset_breakers()  # the fixture resets per test, not per example
    config = GuardConfig(
        **others,
        keepalive_idle=idle,
        keepalive_interval=interval,
        keepalive_count=count,
        user_timeout=user_timeout,
        ack_timeout=ack_timeout,
        max_idle=max_idle,
        max_age=max_age,
        default_timeout=default_timeout,
        retries=retries,
        breaker_fail_max=fail_max,
        breaker_reset_timeout=reset_timeout,
        dns_recheck=dns_recheck,
    )
    with mount(requests.Session(), config) as s:
        for _ in range(2):
            assert s.get(server.url).text == "ok"
        socks = pooled_sockets(s.get_adapter(server.url))
        assert socks, "the connection went back to the pool"
        opts = read_options(socks[0])
    assert opts["TCP_NODELAY"] == 1
    if not others["keepalive"]:
        assert opts["SO_KEEPALIVE"] == 0
        return
    assert opts["SO_KEEPALIVE"] == 1
    if LINUX:
        assert opts["TCP_KEEPIDLE"] == -(-idle // 1)
        assert opts["TCP_KEEPINTVL"] == -(-interval // 1)
        assert opts["TCP_KEEPCNT"] == count
        expected = 0 if user_timeout is None else max(1, int(user_timeout * 1000))
        assert opts["TCP_USER_TIMEOUT"] == expected


def test_an_option_the_platform_refuses_is_dropped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reset_probes()
    good = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    refused = (socket.IPPROTO_TCP, 0x7FFF, 1)  # no such TCP option: ENOPROTOOPT
    with caplog.at_level(logging.WARNING, logger="requests_azguard"):
        assert usable_options([good, refused]) == [good]
        assert usable_options([good, refused]) == [good]
        assert usable_options([refused, good]) == [good]
    warnings = [r for r in caplog.records if "refuses socket option" in r.getMessage()]
    assert len(warnings) == 1


# -- 2 and 3. Redis URLs, passwords --------------------------------------------------

PASSWORDS = ["pa#ss", "p@ss", "a/b", "wh?at", "co:lon", "per%cent", "all@/#?:%mixed"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_redact_hides_every_password_shape(password: str) -> None:
    for url in (
        f"redis://:{password}@127.0.0.1:6379/0",
        f"redis://user:{password}@127.0.0.1:6379/0",
        f"rediss://{password}@cache.internal:6380",
        f"unix://:{password}@/run/redis.sock?db=0",
        f"redis://127.0.0.1:6379/0?password={password}",
        f"redis://127.0.0.1:6379/0?db=1&password={password}",
    ):
        shown = redact_url(url)
        assert password not in shown, (url, shown)
        assert "***" in shown
        assert scrub(f"error talking to {url}: {password}", url).count(password) == 0


def test_redact_keeps_what_is_not_secret() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://app:pw@h:1/2?db=3") == "redis://app:***@h:1/2?db=3"
    assert redact_url("http://[::1]:8080/x?token=t&q=1") == "http://[::1]:8080/x?token=***&q=1"


@pytest.mark.parametrize(
    "url",
    ["redis://:pa#ss@host/0", "redis://:a/b@host/0", "redis://:wh?at@host/0", "redis://h:x/0"],
)
def test_malformed_redis_urls_are_refused_at_config_time(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        describe_env({"AZGUARD_REDIS_URL": url})
    assert "AZGUARD_REDIS_URL" in str(info.value) and "redis-py" in str(info.value)
    with pytest.raises(ConfigError) as info2:
        GuardConfig(redis_url=url)
    for message in (str(info.value), str(info2.value)):
        for fragment in ("pa#ss", "a/b", "wh?at", "ss@"):
            assert fragment not in message


@pytest.mark.parametrize("password", PASSWORDS)
def test_no_password_in_repr_env_or_breaker_settings(password: str) -> None:
    from urllib.parse import quote

    from requests_azguard._breaker import BreakerSettings

    for url in (
        f"redis://:{quote(password, safe='')}@127.0.0.1:6379/0",
        f"redis://127.0.0.1:6379/0?password={quote(password, safe='')}",
    ):
        config = GuardConfig(redis_url=url)
        env = dict(os.environ, AZGUARD_REDIS_URL=url)
        env.pop("AZGUARD_AUTO", None)
        texts = [repr(config), repr(BreakerSettings.of(config)), str(config.redis_url_redacted)]
        for argv in (["env"], ["env", "--json"]):
            out = subprocess.run(
                [sys.executable, "-m", "requests_azguard", *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            texts.append(out.stdout + out.stderr)
        for text in texts:
            assert password not in text and quote(password, safe="") not in text, text


@pytest.mark.parametrize("password", ["p@ss/w#rd?x:y%z"])
def test_doctor_never_prints_url_credentials(server: HTTPTestServer, password: str) -> None:
    from urllib.parse import quote

    secret = quote(password, safe="")
    url = f"http://user:{secret}@127.0.0.1:{server.port}/x?password={secret}&q=1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZGUARD_")}
    for extra in ([], ["--json"]):
        out = subprocess.run(
            [sys.executable, "-m", "requests_azguard", "doctor", url, *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        text = out.stdout + out.stderr
        assert secret not in text and password not in text, text
        assert "***" in text
        if extra:
            assert json.loads(out.stdout)["url"].startswith("http://user:***@127.0.0.1")
    # And when the request fails, the error quotes the URL redacted.
    dead = f"http://user:{secret}@127.0.0.1:1/x?password={secret}"
    out = subprocess.run(
        [sys.executable, "-m", "requests_azguard", "doctor", dead, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert secret not in out.stdout + out.stderr


def test_redis_failing_in_any_way_never_raises_into_a_request(
    server: HTTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A URL redis-py chokes on at connect time (it passed validation because
    the Python-side check was bypassed) and a Redis that answers garbage: the
    requests succeed on local breaker state, the outage is logged once and
    the log holds no secret."""
    reset_breakers(reattach_interval=0.0)
    config = GuardConfig(redis_url="redis://:s3cr3t@127.0.0.1:1/0")
    # Bypass validation the way a future redis-py change could: a URL that
    # parses today but fails when the client is built.
    object.__setattr__(config, "redis_url", "redis://:s3cr3t#frag@127.0.0.1:1/0")
    with (
        caplog.at_level(logging.WARNING, logger="requests_azguard"),
        mount(requests.Session(), config) as s,
    ):
        for _ in range(20):
            assert s.get(server.url).text == "ok"
    messages = [r.getMessage() for r in caplog.records]
    outages = [m for m in messages if "unreachable" in m]
    assert len(outages) == 1
    assert not any("s3cr3t" in m for m in messages)


def test_a_non_redis_server_never_raises_into_a_request(
    server: HTTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    # An HTTP server where Redis should be: redis-py gets replies it cannot parse.
    other = HTTPTestServer(lambda req: Action(status=400, close=True))
    try:
        reset_breakers(reattach_interval=0.0)
        config = GuardConfig(redis_url=f"redis://:pw@127.0.0.1:{other.port}/0")
        with mount(requests.Session(), config) as s:
            for _ in range(10):
                assert s.get(server.url).text == "ok"
    finally:
        other.close()


# -- 4. Redis losing its data ------------------------------------------------------


@pytest.mark.parametrize("loss", ["flushall", "restart"])
def test_an_open_breaker_survives_redis_losing_its_data(
    redis_server: RedisServer,  # noqa: F811 - fixture
    loss: str,
) -> None:
    import redis

    clock = [1000.0]
    reset_breakers(clock=lambda: clock[0], sync_interval=0.0, reattach_interval=0.0)
    down = HTTPTestServer(lambda req: Action(status=503))
    try:
        config = GuardConfig(
            redis_url=redis_server.url, breaker_fail_max=3, breaker_reset_timeout=30.0
        )
        with mount(requests.Session(), config) as s:
            for _ in range(3):
                s.get(down.url)
            assert registry().breakers()[0].state == OPEN
            sent = len(down.requests)
            if loss == "flushall":
                redis.Redis.from_url(redis_server.url).flushall()
            else:  # a restart without persistence (the fixture saves nothing)
                redis_server.kill()
                redis_server.start()
            client = redis.Redis.from_url(redis_server.url)
            assert client.keys("azguard:breaker:*") == []
            for _ in range(50):
                clock[0] += 0.1  # well inside the 30 s open period
                with pytest.raises(CircuitOpenError):
                    s.get(down.url)
            assert len(down.requests) == sent, "no extra request reached the host"
            # ... and the open state is back in Redis for the fleet.
            keys = client.keys("azguard:breaker:*")
            assert keys and client.hget(keys[0], "state") == b"open"
    finally:
        down.close()


# -- 6. bounded process-wide state ---------------------------------------------------


def test_dns_cache_stays_bounded_under_10000_hosts() -> None:
    from requests_azguard._dns import MAX_HOSTS, DnsCache

    cache = DnsCache()  # the real resolver: numeric hosts resolve without a query
    for i in range(10_000):
        host = f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}"
        assert cache.addresses(host, 8000 + (i % 50), now=float(i), interval=60.0)
    assert len(cache) == MAX_HOSTS
    # The newest answers are the ones kept.
    assert cache.addresses("127.0.39.15", 8000 + 9999 % 50, now=10_000.0, interval=60.0)


def test_every_process_wide_table_stays_bounded_under_10000_hosts() -> None:
    from requests_azguard import _condemn
    from requests_azguard._breaker_registry import BreakerLookup, _origin_key
    from requests_azguard._instrument import BoundedLabel, HostLabels

    config = GuardConfig()
    lookup = BreakerLookup(config)
    labels = HostLabels(max_hosts=50)
    reasons = BoundedLabel()
    for i in range(10_000):
        url = f"http://h{i}.example:80/p?q={i}"
        request = requests.Request("GET", url).prepare()
        lookup(request)
        _condemn.condemn(("10.0.0.1", i), float(i))
        labels(f"http://h{i}.example:80")
        reasons(f"reason_{i}")
    assert len(registry()) <= registry().max_hosts
    assert _origin_key.cache_info().currsize <= 1024
    assert len(lookup._by_url) <= BreakerLookup.MAX_URLS
    assert len(_condemn._condemned) <= _condemn._MAX_PEERS
    assert len(labels._seen) <= 4 * 50 + 256
    assert len(reasons._seen) <= 64


# -- 7. small ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", " false ", "OFF", "no", ""])
def test_azguard_auto_off_imports_nothing(value: str) -> None:
    env = dict(os.environ, AZGUARD_AUTO=value)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; print(sorted(m for m in sys.modules if m.startswith('requests_azguard')))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    assert out.stderr == ""


def test_ipv6_host_label_is_bracketed(recorder: Recorder) -> None:
    import threading

    try:
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        listener.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with mount(requests.Session(), GuardConfig()) as s:
            assert s.get(f"http://[::1]:{port}/", timeout=10).text == "ok"
    finally:
        thread.join(10)
        listener.close()
    assert recorder.values("connection_opened", "host") == [f"http://[::1]:{port}"]


def test_pth_line_knows_the_same_false_spellings_as_the_hook() -> None:
    import ast
    from pathlib import Path

    from requests_azguard import _autostart

    line = (Path(__file__).resolve().parent.parent / _autostart.PTH_NAME).read_text()
    tuples = [
        ast.literal_eval(node)
        for node in ast.walk(ast.parse(line))
        if isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts)
    ]
    assert set(tuples[0]) == {""} | set(_autostart._FALSE)


@pytest.mark.parametrize("password", PASSWORDS)
def test_redis_outage_warning_never_shows_the_password(
    server: HTTPTestServer, caplog: pytest.LogCaptureFixture, password: str
) -> None:
    from urllib.parse import quote

    secret = quote(password, safe="")
    for url in (
        f"redis://user:{secret}@127.0.0.1:1/0",  # nothing listens on port 1
        f"redis://127.0.0.1:1/0?password={secret}",
    ):
        reset_breakers()
        caplog.clear()
        with (
            caplog.at_level(logging.WARNING, logger="requests_azguard"),
            mount(requests.Session(), GuardConfig(redis_url=url)) as s,
        ):
            assert s.get(server.url).text == "ok"
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert "unreachable" in text
        assert secret not in text and password not in text, text
        assert repr(registry().links()[0]).count("***") == 1
