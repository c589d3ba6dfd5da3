"""The configuration's one specification: every setting, as data.

Each ``Setting`` names its ``GuardConfig`` field and ``AZGUARD_*`` variable,
its kind (what is accepted, including whether ``off`` is), its default and
the text the documentation and ``azguard env --help`` show.  Parsing the
environment and validating a config built in Python both read this table
and nothing else, so the two cannot disagree.
"""

from __future__ import annotations

from typing import Any, Dict, Final, FrozenSet, NamedTuple, Optional, Tuple

from ._config_kinds import (
    AUTO_ACCEPTED,
    DURATION_ACCEPTED,
    Address,
    Auto,
    Choice,
    Duration,
    Flag,
    Kind,
    PolicyKind,
    RedisUrl,
    StatusCode,
    StatusCodes,
    TimeoutPair,
    Whole,
)

__all__ = [
    "DEFAULTS",
    "ENV_SETTINGS",
    "ENV_VARS",
    "MAX_COUNTER",
    "MAX_DURATION_SECONDS",
    "MAX_KEEPALIVE_COUNT",
    "MAX_KEEPALIVE_SECONDS",
    "MAX_RETRIES",
    "RETRY_NON_IDEMPOTENT_MODES",
    "SETTINGS",
    "Setting",
    "TimeoutPairValue",
    "parse_duration",
    "parse_timeout_pair",
]

# Keepalive idle stays well below the shortest common middlebox idle timeout
# (Azure LB 240 s; AWS NAT gateway 350 s; GCP 600 s) so that probes keep the
# flow alive there and find a dead one within about a minute.
DEFAULT_KEEPALIVE_IDLE: Final = 30.0
DEFAULT_KEEPALIVE_INTERVAL: Final = 10.0
DEFAULT_KEEPALIVE_COUNT: Final = 3
# Generous on purpose: this is the bound for requests that cannot be replayed,
# where a tight verdict would turn a slow answer into a lost one.
DEFAULT_USER_TIMEOUT: Final = 30.0
DEFAULT_MAX_IDLE: Final = 60.0
DEFAULT_MAX_AGE: Final = 600.0
DEFAULT_ACK_TIMEOUT: Final = 0.5
DEFAULT_RETRIES: Final = 3
DEFAULT_BREAKER_FAIL_MAX: Final = 5
DEFAULT_BREAKER_RESET_TIMEOUT: Final = 30.0
DEFAULT_BREAKER_STATUSES: Final[FrozenSet[int]] = frozenset({502, 503, 504})
DEFAULT_TIMEOUT_FAIL_FAST: Final = 2
DEFAULT_METRICS_ADDR: Final = "127.0.0.1"
RETRY_NON_IDEMPOTENT_MODES: Final = ("unsent", "never", "always")

# What the platforms accept (nothing validated may fail at setsockopt):
# Linux caps TCP_KEEPIDLE and TCP_KEEPINTVL at 32767 s (MAX_TCP_KEEPIDLE,
# MAX_TCP_KEEPINTVL) and TCP_KEEPCNT at 127 (MAX_TCP_KEEPCNT); macOS takes up
# to 4294967 s and Windows' SIO_KEEPALIVE_VALS takes milliseconds in a ULONG,
# so Linux's limits are the common ones.  ack_timeout (a TCP_USER_TIMEOUT in
# flight) shares the keepalive cap: a bound on in-flight silence has no use
# past nine hours, and one cap keeps the watchdog's settings simple.
MAX_KEEPALIVE_SECONDS: Final = 32767
MAX_KEEPALIVE_COUNT: Final = 127
# TCP_USER_TIMEOUT is milliseconds in a C int (Python's setsockopt packs an
# int value as a C int, and Linux rejects a negative one): 2147483647 ms.
# Every other duration ends up as a socket timeout or a poll() in
# milliseconds, which have the same C-int ceiling; about 24.8 days.
MAX_DURATION_SECONDS: Final = 2147483.0
MAX_RETRIES: Final = 100
MAX_COUNTER: Final = 1_000_000
# tcpi_total_retrans is a u32; a C int bounds it in practice.
_MAX_C_INT: Final = 2**31 - 1
TimeoutPairValue = Tuple[float, float]

_KERNEL: Final = "the Linux kernel's limit"
_C_INT_MS: Final = "about 24.8 days: milliseconds in a C int"
_KEEPALIVE_ACCEPTED: Final = f"a duration up to {MAX_KEEPALIVE_SECONDS} s ({_KERNEL})"

_DURATION: Final = Duration(MAX_DURATION_SECONDS, _C_INT_MS)
_DURATION_OR_OFF: Final = Duration(MAX_DURATION_SECONDS, _C_INT_MS, off=True)
_KEEPALIVE_DURATION: Final = Duration(MAX_KEEPALIVE_SECONDS, _KERNEL)
_TIMEOUT_PAIR: Final = TimeoutPair(_DURATION)


class Setting(NamedTuple):
    """One setting.  ``field`` is empty for AZGUARD_AUTO (read by the
    start-up hook, listed so ``azguard env`` reports and validates it);
    ``variable`` is empty for the Python-only fields."""

    variable: str
    field: str
    kind: Kind
    default: Any
    #: What is accepted, for people: the docs' table and ``azguard env --help``.
    accepted: str


def _python(field: str, kind: Kind, default: Any) -> Setting:
    return Setting("", field, kind, default, kind.code_accepted)


# The environment contract of DESIGN.md, then the Python-only fields, in
# GuardConfig's field order.
SETTINGS: Tuple[Setting, ...] = (
    Setting("AZGUARD_AUTO", "", Auto(), False, AUTO_ACCEPTED),
    Setting("AZGUARD_KEEPALIVE", "keepalive", Flag(), True, "1 or 0"),
    Setting(
        "AZGUARD_KEEPALIVE_IDLE",
        "keepalive_idle",
        _KEEPALIVE_DURATION,
        DEFAULT_KEEPALIVE_IDLE,
        _KEEPALIVE_ACCEPTED,
    ),
    Setting(
        "AZGUARD_KEEPALIVE_INTERVAL",
        "keepalive_interval",
        _KEEPALIVE_DURATION,
        DEFAULT_KEEPALIVE_INTERVAL,
        _KEEPALIVE_ACCEPTED,
    ),
    Setting(
        "AZGUARD_KEEPALIVE_COUNT",
        "keepalive_count",
        Whole(1, MAX_KEEPALIVE_COUNT, why=_KERNEL),
        DEFAULT_KEEPALIVE_COUNT,
        f"a whole number from 1 to {MAX_KEEPALIVE_COUNT} ({_KERNEL})",
    ),
    Setting(
        "AZGUARD_USER_TIMEOUT",
        "user_timeout",
        _DURATION_OR_OFF,
        DEFAULT_USER_TIMEOUT,
        "a duration or off",
    ),
    Setting(
        "AZGUARD_MAX_IDLE", "max_idle", _DURATION_OR_OFF, DEFAULT_MAX_IDLE, "a duration or off"
    ),
    Setting("AZGUARD_MAX_AGE", "max_age", _DURATION_OR_OFF, DEFAULT_MAX_AGE, "a duration or off"),
    Setting(
        "AZGUARD_ACK_TIMEOUT",
        "ack_timeout",
        Duration(MAX_KEEPALIVE_SECONDS, _KERNEL, off=True),
        DEFAULT_ACK_TIMEOUT,
        _KEEPALIVE_ACCEPTED + " or off",
    ),
    Setting(
        "AZGUARD_DEFAULT_TIMEOUT",
        "default_timeout",
        _TIMEOUT_PAIR,
        None,
        "connect,read durations, one duration, or off",
    ),
    Setting(
        "AZGUARD_RETRIES",
        "retries",
        Whole(0, MAX_RETRIES),
        DEFAULT_RETRIES,
        f"a whole number from 0 to {MAX_RETRIES}",
    ),
    Setting(
        "AZGUARD_RETRY_NON_IDEMPOTENT",
        "retry_non_idempotent",
        Choice(RETRY_NON_IDEMPOTENT_MODES),
        "unsent",
        "unsent, never or always",
    ),
    Setting("AZGUARD_BREAKER", "breaker", Flag(), True, "1 or 0"),
    Setting(
        "AZGUARD_BREAKER_FAIL_MAX",
        "breaker_fail_max",
        Whole(1, MAX_COUNTER),
        DEFAULT_BREAKER_FAIL_MAX,
        f"a whole number from 1 to {MAX_COUNTER}",
    ),
    Setting(
        "AZGUARD_BREAKER_RESET_TIMEOUT",
        "breaker_reset_timeout",
        _DURATION,
        DEFAULT_BREAKER_RESET_TIMEOUT,
        DURATION_ACCEPTED,
    ),
    Setting(
        "AZGUARD_BREAKER_STATUSES",
        "breaker_statuses",
        StatusCodes(100, 599, example="502,503,504"),
        DEFAULT_BREAKER_STATUSES,
        "comma-separated status codes",
    ),
    Setting(
        "AZGUARD_TIMEOUT_FAIL_FAST",
        "timeout_fail_fast",
        Whole(0, MAX_COUNTER, off=True),
        DEFAULT_TIMEOUT_FAIL_FAST,
        f"a whole number from 0 to {MAX_COUNTER}, or off (0)",
    ),
    Setting(
        "AZGUARD_FALLBACK",
        "fallback_status",
        # Only an error status: a synthetic 200 would hide an open circuit.
        StatusCode(400, 599, off="raise", example=503),
        None,
        "raise or a 4xx/5xx status code",
    ),
    Setting("AZGUARD_REDIS_URL", "redis_url", RedisUrl(), None, "a redis:// URL"),
    Setting("AZGUARD_DNS_RECHECK", "dns_recheck", _DURATION_OR_OFF, None, "a duration or off"),
    Setting(
        "AZGUARD_METRICS_PORT",
        "metrics_port",
        Whole(1, 65535, noun="a TCP port", optional=True),
        None,
        "a TCP port from 1 to 65535",
    ),
    Setting(
        "AZGUARD_METRICS_ADDR", "metrics_addr", Address(), DEFAULT_METRICS_ADDR, "an IP address"
    ),
    Setting("AZGUARD_OTEL", "otel", Flag(), False, "1 or 0"),
    # Health grade thresholds: rtt in seconds, retransmits.
    _python("health_rtt_degraded", _DURATION, 0.050),
    _python("health_rtt_unhealthy", _DURATION, 0.200),
    _python("health_retrans_degraded", Whole(0, _MAX_C_INT), 0),
    _python("health_retrans_unhealthy", Whole(0, _MAX_C_INT), 2),
    _python("policy", PolicyKind(), None),
)

#: The settings read from the environment, in the documentation's order.
ENV_SETTINGS: Tuple[Setting, ...] = tuple(s for s in SETTINGS if s.variable)
#: Every ``AZGUARD_*`` variable the library understands.
ENV_VARS: Tuple[str, ...] = tuple(s.variable for s in ENV_SETTINGS)
#: Each ``GuardConfig`` field's default.
DEFAULTS: Dict[str, Any] = {s.field: s.default for s in SETTINGS if s.field}


def parse_duration(
    name: str,
    raw: str,
    *,
    allow_off: bool = False,
    maximum: float = MAX_DURATION_SECONDS,
) -> Optional[float]:
    """``raw`` (``30``, ``2.5``, ``500ms``, ``2m``...) in seconds, else ``ConfigError``."""
    why = _KERNEL if maximum == MAX_KEEPALIVE_SECONDS else _C_INT_MS
    value: Optional[float] = Duration(maximum, why, off=allow_off).parse(name, raw)
    return value


def parse_timeout_pair(name: str, raw: str) -> Optional[TimeoutPairValue]:
    """``(connect, read)`` seconds from ``5,60``, ``30s`` or ``off``."""
    value: Optional[TimeoutPairValue] = _TIMEOUT_PAIR.parse(name, raw)
    return value
