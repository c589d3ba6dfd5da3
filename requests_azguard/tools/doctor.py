"""``azguard doctor URL``: one guarded request, and what the kernel says about it.

The request goes through ``AzGuardAdapter`` with the configuration from
``AZGUARD_*`` (proxies and CA bundles from the environment, as requests does),
so the socket inspected is the one a guarded program would get.  While the
response is being read, the live pooled socket is asked for its options
(``getsockopt``) and ``TCP_INFO``; the kernel's relevant sysctls come from
/proc/sys.  Warnings name each way the configuration cannot protect the user.

Exit status: 0 when the server answered (any HTTP status), 2 for a bad
argument, a bad ``AZGUARD_*`` value or an unreachable URL: always one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import ssl
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type
from urllib.parse import urlsplit

import requests

from .. import _watchdog
from .._adapter import AzGuardAdapter
from .._config import GuardConfig, parse_duration
from .._errors import ConfigError
from .._keepalive import PROBE_INTERVAL
from .._log import format_peer
from .._policy import root_cause
from .._tcpinfo import IS_LINUX, TcpInfo, base_rto, grade, raw_socket, read_tcp_info

__all__ = ["MIDDLEBOX_IDLE", "advise", "diagnose", "main", "read_sysctls", "retries2_seconds"]

EXIT_OK = 0
EXIT_ERROR = 2

#: Idle timeouts after which common middleboxes forget a flow, in seconds.
MIDDLEBOX_IDLE: Tuple[Tuple[str, float], ...] = (
    ("Azure load balancer", 240.0),
    ("AWS NAT gateway", 350.0),
    ("GCP load balancer / Cloud NAT", 600.0),
)

SYSCTLS: Tuple[str, ...] = (
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_retries2",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_tw_reuse",
)

BODY_LIMIT = 1 << 20  # bytes read for the timing; the rest is not needed


class DoctorError(Exception):
    """A diagnosis that cannot go on; its message is the one line shown."""


# --------------------------------------------------------------------------
# Timing: subclasses of whatever connection classes the guard's pools use.


class _TimedConnection:
    """Records how long the TCP connect and the whole connect (TLS, tunnel) took."""

    doctor_tcp_s: Optional[float] = None
    doctor_connect_s: Optional[float] = None

    def _new_conn(self) -> Any:
        start = time.monotonic()
        sock = super()._new_conn()  # type: ignore[misc]
        self.doctor_tcp_s = time.monotonic() - start
        return sock

    def connect(self) -> None:
        start = time.monotonic()
        super().connect()  # type: ignore[misc]
        self.doctor_connect_s = time.monotonic() - start


_timed_cache: Dict[type, type] = {}


def _timed_pool(pool_cls: Type[Any]) -> Type[Any]:
    if getattr(pool_cls, "_doctor_timed", False):
        return pool_cls
    timed = _timed_cache.get(pool_cls)
    if timed is None:
        conn_cls = type(
            "Timed" + pool_cls.ConnectionCls.__name__,
            (_TimedConnection, pool_cls.ConnectionCls),
            {},
        )
        timed = type(
            "Timed" + pool_cls.__name__,
            (pool_cls,),
            {"ConnectionCls": conn_cls, "_doctor_timed": True},
        )
        _timed_cache[pool_cls] = timed
    return timed


def _time_manager(manager: Any) -> None:
    classes = getattr(manager, "pool_classes_by_scheme", None)
    if classes:
        manager.pool_classes_by_scheme = {k: _timed_pool(v) for k, v in classes.items()}


class _DoctorAdapter(AzGuardAdapter):
    """The guard's adapter, unchanged except that its connections keep timings."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _time_manager(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _time_manager(manager)
        return manager


# --------------------------------------------------------------------------
# Reading the socket and the kernel.


def read_sockopts(sock: Any) -> Dict[str, Optional[int]]:
    """Keepalive-related options read back from the live socket (None: not
    offered by this platform, or unreadable)."""
    raw = raw_socket(sock)
    wanted = [
        ("SO_KEEPALIVE", socket.SOL_SOCKET, getattr(socket, "SO_KEEPALIVE", None)),
        ("TCP_NODELAY", socket.IPPROTO_TCP, getattr(socket, "TCP_NODELAY", None)),
        (
            "TCP_KEEPIDLE",
            socket.IPPROTO_TCP,
            getattr(socket, "TCP_KEEPIDLE", None)
            or (getattr(socket, "TCP_KEEPALIVE", None) if sys.platform == "darwin" else None),
        ),
        ("TCP_KEEPINTVL", socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None)),
        ("TCP_KEEPCNT", socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None)),
        (
            "TCP_USER_TIMEOUT",
            socket.IPPROTO_TCP,
            getattr(socket, "TCP_USER_TIMEOUT", 18 if IS_LINUX else None),
        ),
    ]
    out: Dict[str, Optional[int]] = {}
    for name, level, opt in wanted:
        if opt is None:
            out[name] = None
            continue
        try:
            out[name] = int(raw.getsockopt(level, opt))
        except (OSError, AttributeError, TypeError, ValueError):
            out[name] = None
    return out


def read_sysctls(root: str = "/proc/sys") -> Dict[str, Optional[int]]:
    out: Dict[str, Optional[int]] = {}
    for name in SYSCTLS:
        path = os.path.join(root, *name.split("."))
        try:
            with open(path) as fh:
                out[name] = int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            out[name] = None
    return out


def retries2_seconds(retries2: int, rto_min: float = 0.2, rto_max: float = 120.0) -> float:
    """How long the kernel retransmits unacknowledged data before giving up,
    for ``tcp_retries2`` (the kernel's ``tcp_model_timeout`` from the minimum RTO)."""
    return float(sum(min(rto_min * float(2**i), rto_max) for i in range(retries2 + 1)))


# --------------------------------------------------------------------------
# Advice.


def advise(
    config: GuardConfig,
    sockopts: Optional[Dict[str, Optional[int]]],
    sysctls: Dict[str, Optional[int]],
    tcp: Optional[TcpInfo] = None,
    health: Optional[str] = None,
) -> List[str]:
    """Every way this configuration (as the live socket shows it) leaves the
    user unprotected, one sentence each.  Pure: tested with fake inputs."""
    out: List[str] = []
    opts = sockopts or {}
    keepalive_on = bool(opts.get("SO_KEEPALIVE")) if sockopts else config.keepalive
    if not config.keepalive:
        out.append(
            "keepalive is off (AZGUARD_KEEPALIVE=0): a pooled connection whose flow a load "
            "balancer or NAT forgot is only found when a request is written into it"
        )
    elif not keepalive_on:
        out.append(
            "SO_KEEPALIVE is not set on the live socket although the configuration asks for it: "
            "the options did not reach this connection (a proxy or another adapter?)"
        )
    if keepalive_on:
        idle = opts.get("TCP_KEEPIDLE")
        idle_s = float(idle) if idle is not None else config.keepalive_idle
        exceeded = [(name, limit) for name, limit in MIDDLEBOX_IDLE if idle_s >= limit]
        if exceeded:
            names = ", ".join(f"{name} ({limit:g} s)" for name, limit in exceeded)
            out.append(
                f"keepalive idle {idle_s:g} s is not below the idle timeout of {names}: the flow "
                "can be forgotten before the first probe; set AZGUARD_KEEPALIVE_IDLE below 240s"
            )
    retries2 = sysctls.get("net.ipv4.tcp_retries2")
    kernel_wait = (
        f"about {retries2_seconds(retries2) / 60:.0f} min (tcp_retries2={retries2})"
        if retries2 is not None
        else "until tcp_retries2 gives up (about 15 min by default)"
    )
    user_timeout = opts.get("TCP_USER_TIMEOUT") if sockopts else None
    if config.user_timeout is None or (IS_LINUX and sockopts and not user_timeout):
        out.append(
            "TCP_USER_TIMEOUT is off (AZGUARD_USER_TIMEOUT=off): data the peer never "
            f"acknowledges is retransmitted for {kernel_wait} before the socket fails"
        )
    if config.default_timeout is None:
        out.append(
            "no default timeout (AZGUARD_DEFAULT_TIMEOUT is unset): a request sent without "
            "timeout= has no read deadline; set e.g. AZGUARD_DEFAULT_TIMEOUT=5,60"
        )
    if config.ack_timeout is None:
        out.append(
            "the in-flight black-hole watchdog is off (AZGUARD_ACK_TIMEOUT=off): a request "
            "written into a dead flow waits for the read timeout"
        )
    if not config.keepalive and (config.max_idle is None or config.max_idle >= 240.0):
        shown = "off" if config.max_idle is None else f"{config.max_idle:g} s"
        out.append(
            f"with keepalive off, max_idle {shown} lets pooled connections outlive the "
            "shortest middlebox idle timeout (240 s)"
        )
    if health is not None and tcp is not None and health != "healthy":
        out.append(
            f"TCP_INFO grades this connection {health}: state {tcp.state_name}, "
            f"rtt {tcp.rtt * 1000:.1f} ms, retransmits {tcp.retransmits}, probes {tcp.probes}"
        )
    return out


# --------------------------------------------------------------------------
# The diagnosis.


def _check_url(url: str) -> Tuple[str, str, int]:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise DoctorError(f"{url!r} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DoctorError(f"{url!r} is not an http:// or https:// URL")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise DoctorError(f"{url!r} has an invalid port ({exc})") from None
    if not host:
        raise DoctorError(f"{url!r} has no host")
    return scheme, host, port or (443 if scheme == "https" else 80)


def _root_cause(exc: BaseException) -> str:
    """The most specific reason in an exception chain, e.g. 'ECONNREFUSED (Connection refused)'."""
    cur = root_cause(exc)
    if isinstance(cur, ssl.SSLError):
        # An SSLError's errno is OpenSSL's error code, not an errno: code 1
        # would read as EPERM.  Say what TLS said.
        reason = getattr(cur, "reason", None)
        detail = getattr(cur, "verify_message", None) or cur.strerror or str(cur)
        return f"TLS {reason} ({detail})" if reason else f"TLS error ({detail})"
    if isinstance(cur, socket.gaierror):
        return f"name resolution failed ({cur})"
    if isinstance(cur, OSError) and cur.errno:
        name = errno.errorcode.get(cur.errno, str(cur.errno))
        return f"{name} ({cur.strerror or cur})"
    text = str(cur) or type(cur).__name__
    return text.splitlines()[0][:300]


def _addr(sockaddr: Any) -> Optional[str]:
    return format_peer(tuple(sockaddr)) if sockaddr else None


def diagnose(
    url: str,
    config: GuardConfig,
    *,
    verify: Any = True,
    timeout: float = 10.0,
) -> Dict[str, Any]:
    """Run the diagnosis and return the report (the ``--json`` object)."""
    scheme, host, port = _check_url(url)
    proxies = requests.utils.get_environ_proxies(url)
    proxy = proxies.get(scheme) or proxies.get("all")

    start = time.monotonic()
    resolved: List[str] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        if not proxy:  # through a proxy, the proxy resolves
            raise DoctorError(f"cannot resolve {host}: {exc}") from None
        infos = []
    dns_s = time.monotonic() - start
    for info in infos:
        address = str(info[4][0])
        if address not in resolved:
            resolved.append(address)

    session = requests.Session()
    adapter = _DoctorAdapter(config=config)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    try:
        sent = time.monotonic()
        try:
            with warnings.catch_warnings():
                if verify is False:
                    warnings.simplefilter("ignore")  # --insecure was asked for explicitly
                resp = session.get(
                    url, stream=True, timeout=timeout, verify=verify, allow_redirects=False
                )
        except requests.exceptions.SSLError as exc:
            raise DoctorError(f"TLS with {host}:{port} failed: {_root_cause(exc)}") from None
        except requests.exceptions.Timeout as exc:
            raise DoctorError(
                f"no answer from {url} within {timeout:g} s: {_root_cause(exc)}"
            ) from None
        except Exception as exc:  # requests, urllib3 or socket: all the same to the user
            raise DoctorError(f"cannot reach {url}: {_root_cause(exc)}") from None
        headers_at = time.monotonic()
        conn = getattr(resp.raw, "_connection", None) or getattr(resp.raw, "connection", None)
        sock = getattr(conn, "sock", None)
        report = _inspect(conn, sock, config)
        size = 0
        try:
            for chunk in resp.iter_content(65536):
                size += len(chunk)
                if size >= BODY_LIMIT:
                    break
        except Exception as exc:
            raise DoctorError(f"{url} answered, then the body failed: {_root_cause(exc)}") from None
        done = time.monotonic()
        resp.close()
        # Fully read, the connection is back in the pool; read again there
        # (the in-flight watchdog may have probed it while the response was
        # awaited).  A closed connection keeps the first read.
        idle_sock = getattr(conn, "sock", None)
        keep_alive = idle_sock is not None
        if idle_sock is not None:
            idle = _inspect(conn, idle_sock, config)
            in_flight = report["socket_options"]
            if idle["socket_options"] is not None:
                report.update(idle)
                report["socket_options_in_flight"] = in_flight
                report["socket_options_read"] = "idle in the pool, after the response"
    finally:
        session.close()

    connect_s = getattr(conn, "doctor_connect_s", None)
    tcp_s = getattr(conn, "doctor_tcp_s", None)
    report.update(
        url=_redact(url),
        ok=True,
        keep_alive=keep_alive,
        status=resp.status_code,
        reason=resp.reason,
        location=_redact(resp.headers["Location"]) if "Location" in resp.headers else None,
        body_bytes=size,
        body_truncated=size >= BODY_LIMIT,
        proxy=_redact(proxy) if proxy else None,
        resolved=resolved,
        timings={
            "dns_s": dns_s if infos else None,
            "tcp_connect_s": tcp_s,
            "tls_s": (connect_s - tcp_s)
            if (scheme == "https" and connect_s is not None and tcp_s is not None)
            else None,
            "first_byte_s": (headers_at - sent - (connect_s or 0.0)),
            "total_s": done - sent,
        },
        sysctl=read_sysctls(),
    )
    report["config"] = {
        "keepalive": config.keepalive,
        "keepalive_idle_s": config.keepalive_idle,
        "keepalive_interval_s": config.keepalive_interval,
        "keepalive_count": config.keepalive_count,
        "user_timeout_s": config.user_timeout,
        "max_idle_s": config.max_idle,
        "max_age_s": config.max_age,
        "ack_timeout_s": config.ack_timeout,
        "default_timeout_s": list(config.default_timeout) if config.default_timeout else None,
        "retries": config.retries,
        "breaker": config.breaker,
    }
    # What the in-flight watchdog does with a replayable request (_watchdog).
    report["watchdog"] = None
    if config.ack_timeout is not None and config.keepalive and IS_LINUX:
        report["watchdog"] = {
            "unacked_verdict_retransmits": {
                "siblings_stuck_too": _watchdog.STUCK_RETRANSMITS,
                "no_sibling_hears_the_peer": _watchdog.UNHEARD_RETRANSMITS,
                "alone": _watchdog.ALONE_RETRANSMITS,
            },
            "probe_after_s": _watchdog.PROBE_AFTER,
            "probe_interval_s": float(PROBE_INTERVAL),
            "verdict_after_unanswered_probes": _watchdog.VERDICT_PROBES,
        }
    report["warnings"] = advise(
        config, report["socket_options"], report["sysctl"], report["_tcp"], report["health"]
    )
    if not keep_alive:
        report["warnings"].insert(
            0,
            "the server closed the connection after the response (no keep-alive: HTTP/1.0 or "
            "'Connection: close'): every request pays a new connection, the guard's reuse "
            "checks never apply, and the idle socket could not be read back",
        )
    del report["_tcp"]
    return report


def _map_leaves(value: Any, leaf: type, change: Callable[[Any], Any]) -> Any:
    """``value`` (a JSON-able report) with ``change`` applied to every ``leaf``
    inside it, through dicts (values only, not keys), lists and tuples (which
    come back as lists, as JSON has them).  One walk for ``rounded`` and
    ``_scrubbed``, so the two cannot come to disagree on what they reach."""
    if isinstance(value, leaf):
        return change(value)
    if isinstance(value, dict):
        return {k: _map_leaves(v, leaf, change) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_map_leaves(v, leaf, change) for v in value]
    return value


def rounded(value: Any, digits: int = 6) -> Any:
    """``value`` with every float rounded to ``digits`` decimals (microseconds
    for seconds): ``0.20001300000000002`` prints as ``0.200013``."""
    return _map_leaves(value, float, lambda v: round(v, digits))


def _redact(url: str) -> str:
    from .._redact import redact_url

    return redact_url(url)


def _inspect(conn: Any, sock: Any, config: GuardConfig) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "local": None,
        "peer": None,
        "tls": None,
        "socket_options": None,
        "tcp_info": None,
        "health": None,
        "base_rto_s": None,
        "_tcp": None,
        "socket_options_in_flight": None,
        "socket_options_read": "while the response was read",
    }
    if sock is None:
        return out
    raw = raw_socket(sock)
    try:
        out["local"] = _addr(raw.getsockname())
        out["peer"] = _addr(raw.getpeername())
    except OSError:
        pass
    version = getattr(sock, "version", None)
    if callable(version):
        cipher = sock.cipher() if callable(getattr(sock, "cipher", None)) else None
        out["tls"] = {"version": version(), "cipher": cipher[0] if cipher else None}
    out["socket_options"] = read_sockopts(sock)
    tcp = read_tcp_info(sock)
    if tcp is not None:
        out["_tcp"] = tcp
        out["tcp_info"] = tcp.as_dict()
        out["health"] = grade(tcp, config)
        out["base_rto_s"] = base_rto(tcp)
    return out


# --------------------------------------------------------------------------
# Output.


def _ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "n/a"
    ms = seconds * 1000
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.1f} ms"


def _render(report: Dict[str, Any]) -> str:
    lines = [f"azguard doctor {report['url']}"]
    add = lines.append
    add(f"  answer        HTTP {report['status']} {report['reason'] or ''}".rstrip())
    if report.get("location"):
        add(f"  location      {report['location']} (not followed)")
    if report.get("proxy"):
        add(f"  proxy         {report['proxy']}")
    add(f"  resolved      {', '.join(report['resolved']) or 'n/a'}")
    add(f"  local         {report['local'] or 'n/a'}")
    add(f"  peer          {report['peer'] or 'n/a'}")
    tls = report.get("tls")
    add(f"  tls           {tls['version']} ({tls['cipher']})" if tls else "  tls           none")
    t = report["timings"]
    add(
        f"  timing        dns {_ms(t['dns_s'])}, tcp connect {_ms(t['tcp_connect_s'])}, "
        f"tls {_ms(t['tls_s'])}, first byte {_ms(t['first_byte_s'])}, total {_ms(t['total_s'])}"
    )
    opts = report.get("socket_options") or {}
    if opts:
        add(f"socket options (getsockopt on the live socket, {report['socket_options_read']})")
    else:
        add("socket options")
    flight = report.get("socket_options_in_flight") or {}
    units = {"TCP_KEEPIDLE": " s", "TCP_KEEPINTVL": " s", "TCP_USER_TIMEOUT": " ms"}
    for name, value in opts.items():
        shown = "n/a" if value is None else f"{value}{units.get(name, '')}"
        if name in flight and flight[name] != value:
            shown += f"  (while the response was read: {flight[name]}{units.get(name, '')})"
        add(f"  {name:<17} {shown}")
    if not opts:
        add("  not read: the server closed the connection (no keep-alive, see warnings)")
    dog = report.get("watchdog")
    add("in-flight watchdog (replayable requests)")
    if dog:
        rule = dog["unacked_verdict_retransmits"]
        add(
            f"  bytes unacknowledged past ack_timeout: a verdict after "
            f"{rule['siblings_stuck_too']} unanswered retransmissions if other requests to the "
            f"peer are stuck too, {rule['no_sibling_hears_the_peer']} if no other flow hears "
            f"from it, {rule['alone']} otherwise"
        )
        add(
            f"  acknowledged, then {dog['probe_after_s']:g} s of silence: a keepalive probe "
            f"every {dog['probe_interval_s']:g} s, a verdict after "
            f"{dog['verdict_after_unanswered_probes']} unanswered"
        )
    else:
        add("  off (AZGUARD_ACK_TIMEOUT=off, keepalive off, or not Linux)")
    add("TCP_INFO")
    tcp = report.get("tcp_info")
    if tcp:
        add(
            f"  state {tcp['state_name']}, rtt {_ms(tcp['rtt'])} (var {_ms(tcp['rttvar'])}), "
            f"retransmits {tcp['retransmits']}, total retrans {tcp['total_retrans']}, "
            f"unacked {tcp['unacked']}, probes {tcp['probes']}"
        )
        add(f"  base rto {_ms(report['base_rto_s'])}, health {report['health']}")
    elif sys.platform.startswith("linux"):
        add("  not read: the server closed the connection (no keep-alive, see warnings)")
    else:
        add("  n/a (Linux only)")
    add("kernel")
    for name, value in report["sysctl"].items():
        add(f"  {name:<30} {'n/a' if value is None else value}")
    if report["warnings"]:
        add("warnings")
        for text in report["warnings"]:
            add(f"  - {text}")
    else:
        add("no warnings")
    return "\n".join(lines)


def _scrubbed(value: Any, url: str) -> Any:
    """``value`` (a JSON-able report) with every string scrubbed of ``url``'s
    secrets, before JSON escaping could hide one from a text search."""
    from .._redact import scrub

    return _map_leaves(value, str, lambda v: scrub(v, url))


def _fail(message: str, as_json: bool) -> int:
    print(f"azguard doctor: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"ok": False, "error": message}))
    return EXIT_ERROR


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="azguard doctor",
        description="One guarded request, with socket options, TCP_INFO and kernel settings.",
    )
    parser.add_argument("url", help="http:// or https:// URL to request (GET)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify the server's TLS certificate"
    )
    parser.add_argument("--cacert", metavar="PATH", help="CA bundle to verify the server with")
    parser.add_argument(
        "--timeout",
        default="10s",
        help="connect and read timeout of the request (default 10s; e.g. 500ms, 30s)",
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        timeout = parse_duration("--timeout", args.timeout)
        assert timeout is not None
        config = GuardConfig.from_env()
    except ConfigError as exc:
        return _fail(str(exc), args.json)
    if args.insecure and args.cacert:
        return _fail("--insecure and --cacert contradict each other; give one", args.json)
    verify: Any = True
    if args.cacert:
        if not os.path.isfile(args.cacert):
            return _fail(f"--cacert {args.cacert!r}: no such file", args.json)
        verify = args.cacert
    elif args.insecure:
        verify = False
    from .._redact import scrub

    # A URL's user:password@ or ?password= must not reach the terminal or a
    # JSON consumer, whichever message quotes it (urllib3's errors quote the
    # path and query).
    try:
        report = diagnose(args.url, config, verify=verify, timeout=timeout)
    except DoctorError as exc:
        return _fail(scrub(str(exc), args.url), args.json)
    if args.json:
        print(json.dumps(rounded(_scrubbed(report, args.url)), sort_keys=True))
    else:
        print(scrub(_render(report), args.url))
    return EXIT_OK
