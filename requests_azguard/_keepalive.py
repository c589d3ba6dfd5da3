"""Keepalive socket options, computed from the config and a platform's constants.

Every function here is pure: the platform's option numbers come in as a
``SocketConstants`` value, so the Linux, macOS and Windows branches are all
tested on any machine with fake tables, and the ``socket`` module is never
mutated.  ``SocketConstants.from_module(socket)`` reads the real table once.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from typing import Any, Dict, Final, List, NamedTuple, Optional, Set, Tuple

from ._config import GuardConfig

__all__ = [
    "SocketConstants",
    "SocketOption",
    "keepalive_options",
    "platform_kind",
    "socket_options",
    "usable_options",
    "windows_keepalive_vals",
]

_log = logging.getLogger("requests_azguard")

SocketOption = Tuple[int, int, int]

# macOS names its idle option TCP_KEEPALIVE and Python does not always export
# it; its value is fixed by <netinet/tcp.h>.
_DARWIN_TCP_KEEPALIVE = 0x10


class SocketConstants(NamedTuple):
    """The option numbers one platform offers (``None``: not offered)."""

    SOL_SOCKET: int
    SO_KEEPALIVE: int
    IPPROTO_TCP: int
    TCP_NODELAY: int
    TCP_KEEPIDLE: Optional[int] = None
    TCP_KEEPALIVE: Optional[int] = None
    TCP_KEEPINTVL: Optional[int] = None
    TCP_KEEPCNT: Optional[int] = None
    TCP_USER_TIMEOUT: Optional[int] = None
    SIO_KEEPALIVE_VALS: Optional[int] = None

    @classmethod
    def from_module(cls, mod: Any, platform: str = sys.platform) -> SocketConstants:
        keepalive = getattr(mod, "TCP_KEEPALIVE", None)
        if keepalive is None and platform == "darwin":
            keepalive = _DARWIN_TCP_KEEPALIVE
        return cls(
            SOL_SOCKET=mod.SOL_SOCKET,
            SO_KEEPALIVE=mod.SO_KEEPALIVE,
            IPPROTO_TCP=mod.IPPROTO_TCP,
            TCP_NODELAY=mod.TCP_NODELAY,
            TCP_KEEPIDLE=getattr(mod, "TCP_KEEPIDLE", None),
            TCP_KEEPALIVE=keepalive,
            TCP_KEEPINTVL=getattr(mod, "TCP_KEEPINTVL", None),
            TCP_KEEPCNT=getattr(mod, "TCP_KEEPCNT", None),
            TCP_USER_TIMEOUT=getattr(mod, "TCP_USER_TIMEOUT", None),
            SIO_KEEPALIVE_VALS=getattr(mod, "SIO_KEEPALIVE_VALS", None),
        )


def platform_kind(platform: str = sys.platform) -> str:
    """``linux``, ``darwin``, ``windows`` or ``other``: decided once per call site."""
    if platform.startswith("linux"):
        return "linux"
    if platform == "darwin":
        return "darwin"
    if platform in ("win32", "cygwin"):
        return "windows"
    return "other"


def _whole_seconds(value: float) -> int:
    # The kernel takes whole seconds; round up so a 0.5 s setting never
    # becomes 0, which Linux rejects with EINVAL.
    return max(1, int(-(-value // 1)))


def keepalive_options(
    config: GuardConfig, consts: SocketConstants, kind: str
) -> List[SocketOption]:
    """The keepalive and user-timeout options for ``kind`` (no TCP_NODELAY)."""
    if not config.keepalive:
        return []
    if kind == "windows":
        # Windows sets idle and interval through WSAIoctl(SIO_KEEPALIVE_VALS),
        # see windows_keepalive_vals(); the option below only switches it on.
        return [(consts.SOL_SOCKET, consts.SO_KEEPALIVE, 1)]
    options = [(consts.SOL_SOCKET, consts.SO_KEEPALIVE, 1)]
    idle_option = consts.TCP_KEEPIDLE if kind == "linux" else consts.TCP_KEEPALIVE
    if kind not in ("linux", "darwin") and idle_option is None:
        idle_option = consts.TCP_KEEPIDLE  # BSDs name it like Linux does
    tcp = consts.IPPROTO_TCP
    if idle_option is not None:
        options.append((tcp, idle_option, _whole_seconds(config.keepalive_idle)))
    if consts.TCP_KEEPINTVL is not None:
        options.append((tcp, consts.TCP_KEEPINTVL, _whole_seconds(config.keepalive_interval)))
    if consts.TCP_KEEPCNT is not None:
        options.append((tcp, consts.TCP_KEEPCNT, config.keepalive_count))
    if kind == "linux" and consts.TCP_USER_TIMEOUT is not None:
        options.extend(user_timeout_options(config.user_timeout, consts))
    return options


def user_timeout_options(seconds: Optional[float], consts: SocketConstants) -> List[SocketOption]:
    """TCP_USER_TIMEOUT in milliseconds; 0 restores the kernel default."""
    if consts.TCP_USER_TIMEOUT is None:
        return []
    millis = 0 if seconds is None else max(1, int(seconds * 1000))
    return [(consts.IPPROTO_TCP, consts.TCP_USER_TIMEOUT, millis)]


def socket_options(
    config: GuardConfig,
    consts: SocketConstants,
    kind: str,
    base: Optional[List[SocketOption]] = None,
) -> List[SocketOption]:
    """urllib3's default options (TCP_NODELAY) followed by the keepalive ones."""
    if base is None:
        base = [(consts.IPPROTO_TCP, consts.TCP_NODELAY, 1)]
    return list(base) + keepalive_options(config, consts, kind)


def windows_keepalive_vals(config: GuardConfig) -> Optional[Tuple[int, int, int]]:
    """``(onoff, idle_ms, interval_ms)`` for ``sock.ioctl(SIO_KEEPALIVE_VALS, ...)``."""
    if not config.keepalive:
        return None
    return (
        1,
        int(config.keepalive_idle * 1000),
        int(config.keepalive_interval * 1000),
    )


#: Keepalive timing while a waiting request's flow is probed (seconds, the
#: kernel's minimum), and the kernel's own give-up count meanwhile: high, so
#: that the watchdog, which asks for several unanswered probes, decides.
PROBE_INTERVAL: Final = 1
PROBE_BACKSTOP_COUNT: Final = 10


def resting_options(config: GuardConfig, consts: SocketConstants, kind: str) -> List[SocketOption]:
    """The configured options that the watchdog's probe options replace, to
    put back once the probed request has its answer (Linux only)."""
    if kind != "linux" or not config.keepalive or consts.TCP_KEEPIDLE is None:
        return []
    tcp = consts.IPPROTO_TCP
    restore = [
        *user_timeout_options(config.user_timeout, consts),
        (tcp, consts.TCP_KEEPIDLE, _whole_seconds(config.keepalive_idle)),
    ]
    if consts.TCP_KEEPINTVL is not None:
        restore.append((tcp, consts.TCP_KEEPINTVL, _whole_seconds(config.keepalive_interval)))
    if consts.TCP_KEEPCNT is not None:
        restore.append((tcp, consts.TCP_KEEPCNT, config.keepalive_count))
    return restore


def probe_options(consts: SocketConstants) -> List[SocketOption]:
    """Options that make the kernel probe a waiting flow every second (Linux).

    TCP_USER_TIMEOUT goes to 0 (off) while probing: otherwise the kernel
    would drop the flow at the first unanswered probe.  Setting TCP_KEEPIDLE
    on a flow already idle that long sends the first probe at once.
    """
    if consts.TCP_KEEPIDLE is None:
        return []
    tcp = consts.IPPROTO_TCP
    options = [
        *user_timeout_options(None, consts),
        (consts.SOL_SOCKET, consts.SO_KEEPALIVE, 1),
        (tcp, consts.TCP_KEEPIDLE, PROBE_INTERVAL),
    ]
    if consts.TCP_KEEPINTVL is not None:
        options.append((tcp, consts.TCP_KEEPINTVL, PROBE_INTERVAL))
    if consts.TCP_KEEPCNT is not None:
        options.append((tcp, consts.TCP_KEEPCNT, PROBE_BACKSTOP_COUNT))
    return options


# Option lists already probed (one per distinct config, so a handful); the cap
# only stops a program that builds configs in a loop from growing it.
_MAX_PROBED: Final = 64
_probed: Dict[Tuple[SocketOption, ...], List[SocketOption]] = {}
_refused_logged: Set[Tuple[int, int]] = set()
_probe_lock = threading.Lock()


def _probe_socket() -> Optional[socket.socket]:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
    return None


def usable_options(options: List[SocketOption]) -> List[SocketOption]:
    """``options`` without those this kernel refuses, tried once on a spare socket.

    urllib3 applies ``socket_options`` inside ``create_connection`` and fails
    the connection when one is refused, so a kernel that refuses an option
    (an older kernel, a sandbox, a platform with other limits than validation
    knows) would fail every request.  Validation keeps values inside what the
    platforms accept; this is the net under it: the refused option is left
    out, logged once, and connections go on without it.  Runs when an adapter
    builds its pools, never per request; no network I/O.
    """
    key = tuple(options)
    with _probe_lock:
        known = _probed.get(key)
        if known is not None:
            return list(known)
    sock = _probe_socket()
    if sock is None:
        return list(options)
    kept: List[SocketOption] = []
    refused: List[Tuple[SocketOption, BaseException]] = []
    try:
        for option in options:
            try:
                sock.setsockopt(*option)
            except (OSError, TypeError, ValueError, OverflowError) as exc:
                refused.append((option, exc))
            else:
                kept.append(option)
    finally:
        sock.close()
    with _probe_lock:
        if len(_probed) >= _MAX_PROBED:
            _probed.clear()
        _probed[key] = kept
        fresh = [(o, e) for o, e in refused if (o[0], o[1]) not in _refused_logged]
        _refused_logged.update((o[0], o[1]) for o, _ in fresh)
    for (level, name, value), error in fresh:
        _log.warning(
            "this platform refuses socket option (level %d, option %d) = %r (%s): "
            "connections go on without it",
            level,
            name,
            value,
            error,
        )
    return kept


def reset_probes() -> None:
    """Forget probed option lists (tests; a forked child keeps them: same kernel)."""
    with _probe_lock:
        _probed.clear()
        _refused_logged.clear()


#: The running platform's constants, read once (no I/O, no mutation).
HOST_CONSTANTS = SocketConstants.from_module(socket)
HOST_KIND = platform_kind()
