"""GuardConfig: every knob in one frozen value, validated in one place.

The environment is read only when ``GuardConfig.from_env()`` is called, never
at import, so importing the package has no side effects and tests can pass an
explicit ``environ`` mapping.  A bad value raises ``ConfigError`` naming the
variable, the value and what is accepted; nothing falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import warnings
from typing import (
    Any,
    Callable,
    Dict,
    Final,
    FrozenSet,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
)

from ._errors import ConfigError, UnknownVariableWarning
from ._policy import Policy
from ._redact import redact_url

__all__ = ["ENV_VARS", "EnvValue", "GuardConfig", "describe_env", "unknown_env_vars"]

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

_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}
_OFF = frozenset({"off", "none", "disabled"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

DURATION_ACCEPTED: Final = "a duration such as 30, 2.5, 500ms, 30s or 2m"

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
# Whole numbers: long digit strings are refused before int() (Python 3.11+
# raises ValueError past 4300 digits) and anything that must fit a C int does.
_MAX_DIGITS: Final = 12
MAX_RETRIES: Final = 100
MAX_COUNTER: Final = 1_000_000
TimeoutPair = Tuple[float, float]


# The one redaction function (see _redact); the old name stays for callers.
_redact_url = redact_url


@dataclasses.dataclass(frozen=True)
class GuardConfig:
    """Immutable configuration of the guard.

    Durations are seconds (floats); ``None`` means the feature is off.
    Build one from Python, from the environment with :meth:`from_env`, or
    derive a variant with :meth:`replace`.
    """

    keepalive: bool = True
    keepalive_idle: float = DEFAULT_KEEPALIVE_IDLE
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    keepalive_count: int = DEFAULT_KEEPALIVE_COUNT
    user_timeout: Optional[float] = DEFAULT_USER_TIMEOUT
    max_idle: Optional[float] = DEFAULT_MAX_IDLE
    max_age: Optional[float] = DEFAULT_MAX_AGE
    ack_timeout: Optional[float] = DEFAULT_ACK_TIMEOUT
    default_timeout: Optional[TimeoutPair] = None
    retries: int = DEFAULT_RETRIES
    retry_non_idempotent: str = "unsent"
    breaker: bool = True
    breaker_fail_max: int = DEFAULT_BREAKER_FAIL_MAX
    breaker_reset_timeout: float = DEFAULT_BREAKER_RESET_TIMEOUT
    breaker_statuses: FrozenSet[int] = DEFAULT_BREAKER_STATUSES
    timeout_fail_fast: int = DEFAULT_TIMEOUT_FAIL_FAST
    fallback_status: Optional[int] = None
    redis_url: Optional[str] = dataclasses.field(default=None, repr=False)
    dns_recheck: Optional[float] = None
    metrics_port: Optional[int] = None
    metrics_addr: str = DEFAULT_METRICS_ADDR
    # Report the metrics through the OpenTelemetry API (the ``otel`` extra).
    otel: bool = False
    # Health grade thresholds (Python only): rtt in seconds, retransmits.
    health_rtt_degraded: float = 0.050
    health_rtt_unhealthy: float = 0.200
    health_retrans_degraded: int = 0
    health_retrans_unhealthy: int = 2
    #: The failure policy's rows for this config (Python only); None follows
    #: the process-wide table (``requests_azguard.set_decision``).
    policy: Optional[Policy] = None

    def __post_init__(self) -> None:
        _validate(self)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr
        )
        redis = "None" if self.redis_url is None else repr(_redact_url(self.redis_url))
        return f"GuardConfig({fields}, redis_url={redis})"

    @property
    def redis_url_redacted(self) -> Optional[str]:
        return None if self.redis_url is None else _redact_url(self.redis_url)

    def replace(self, **changes: Any) -> GuardConfig:
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> GuardConfig:
        """Build a config from ``AZGUARD_*`` variables (``os.environ`` by default).

        ``overrides`` are field values that win over the environment.
        """
        values: Dict[str, Any] = {}
        for item in describe_env(environ):
            # AZGUARD_AUTO is validated here but belongs to the start-up hook.
            if item.source != "default" and item.field:
                values[item.field] = item.value
        values.update(overrides)
        config = cls(**values)
        for message in unknown_env_messages(environ):
            warnings.warn(UnknownVariableWarning(message), stacklevel=2)
        return config


# --------------------------------------------------------------------------
# Parsers: each turns one string into a typed value or raises ConfigError.


def _range_text(maximum: float) -> str:
    if maximum == MAX_KEEPALIVE_SECONDS:
        return f"greater than zero and at most {maximum:.0f} s (the Linux kernel's limit)"
    return (
        f"greater than zero and at most {maximum:.0f} s (about 24.8 days: milliseconds in a C int)"
    )


def parse_duration(
    name: str,
    raw: str,
    *,
    allow_off: bool = False,
    maximum: float = MAX_DURATION_SECONDS,
) -> Optional[float]:
    text = raw.strip().lower()
    if allow_off and text in _OFF:
        return None
    accepted = f"{DURATION_ACCEPTED}, {_range_text(maximum)}" + (", or off" if allow_off else "")
    # Bounded before the regex and float(): a 5000-digit value is refused,
    # not parsed.
    match = _DURATION_RE.match(text) if len(text) <= 64 else None
    if not match:
        raise ConfigError(name, _shorten(raw), accepted)
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0 or seconds > maximum:
        raise ConfigError(name, _shorten(raw), accepted)
    return seconds


def _shorten(raw: str) -> str:
    # An error message must stay readable whatever was pasted in.
    return raw if len(raw) <= 80 else f"{raw[:40]}...({len(raw)} characters)"


def _parse_bool(name: str, raw: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(name, raw, "1 or 0 (also true/false, yes/no, on/off)")


#: What AZGUARD_AUTO accepts (the start-up hook keeps its own copy, in step).
AUTO_ACCEPTED = "1 or 0 (also true/false, yes/no, on/off), or requests"


def _parse_auto(name: str, raw: str) -> Any:
    """``True``/``False``, or ``"requests"``: requests only, no SDK rebinding."""
    text = raw.strip().lower()
    if text == "requests":
        return "requests"
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(name, raw, AUTO_ACCEPTED)


def _parse_int(name: str, raw: str, minimum: int, maximum: int = 2**31 - 1) -> int:
    text = raw.strip()
    if (
        len(text) > _MAX_DIGITS
        or not re.fullmatch(r"[0-9]+", text)
        or not minimum <= int(text) <= maximum
    ):
        raise ConfigError(name, _shorten(raw), f"a whole number from {minimum} to {maximum}")
    return int(text)


def _parse_timeout_pair(name: str, raw: str) -> Optional[TimeoutPair]:
    text = raw.strip().lower()
    if text in _OFF:
        return None
    parts = [p for p in re.split(r"\s*,\s*", text)]
    accepted = (
        "one duration for both connect and read (e.g. 30s), "
        "'connect,read' (e.g. 5,60 or 500ms,1m), or off"
    )
    if len(parts) not in (1, 2):
        raise ConfigError(name, raw, accepted)
    try:
        durations = [parse_duration(name, p) for p in parts]
    except ConfigError:
        raise ConfigError(name, raw, accepted) from None
    connect, read = durations[0], durations[-1]
    assert connect is not None and read is not None
    return (connect, read)


def _parse_statuses(name: str, raw: str) -> FrozenSet[int]:
    accepted = "comma-separated HTTP status codes from 100 to 599, e.g. 502,503,504"
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise ConfigError(name, raw, accepted)
    codes = set()
    for part in parts:
        if not re.fullmatch(r"[0-9]{3}", part) or not 100 <= int(part) <= 599:
            raise ConfigError(name, raw, accepted)
        codes.add(int(part))
    return frozenset(codes)


def _parse_fallback(name: str, raw: str) -> Optional[int]:
    text = raw.strip().lower()
    if text == "raise":
        return None
    # Only an error status: a synthetic 200 would hide an open circuit.
    if re.fullmatch(r"[0-9]{3}", text) and 400 <= int(text) <= 599:
        return int(text)
    raise ConfigError(name, raw, "'raise' or an HTTP status code from 400 to 599 such as 503")


def _parse_fail_fast(name: str, raw: str) -> int:
    if raw.strip().lower() in _OFF:
        return 0
    return _parse_int(name, raw, 0, 1_000_000)


def _parse_mode(name: str, raw: str) -> str:
    text = raw.strip().lower()
    if text not in RETRY_NON_IDEMPOTENT_MODES:
        raise ConfigError(name, raw, "one of " + ", ".join(RETRY_NON_IDEMPOTENT_MODES))
    return text


_REDIS_ACCEPTED: Final = (
    "a redis://, rediss:// or unix:// URL that redis-py can parse "
    "(percent-encode @ / # ? : % in a password, e.g. # as %23)"
)


def check_redis_url(name: str, url: object) -> str:
    """``url`` if redis-py's own parser accepts it, else ``ConfigError``.

    redis-py parses the URL only when the first breaker connects, and its
    ``ValueError`` would then surface in a request; checked here, a bad URL
    is refused up front.  The error shows the URL redacted and never the
    parser's message, which can quote part of the password.
    """
    if not isinstance(url, str):
        raise ConfigError(name, type(url).__name__, "None or " + _REDIS_ACCEPTED)
    text = url.strip()
    if not re.match(r"^(redis|rediss|unix)://", text, re.IGNORECASE):
        # Never echo a URL that may hold a password.
        raise ConfigError(name, _shorten(redact_url(text)), _REDIS_ACCEPTED)
    try:
        from redis.connection import parse_url
    except ImportError:
        raise ConfigError(
            name,
            _shorten(redact_url(text)),
            "a URL only when the redis package is installed "
            "(pip install 'requests-azguard[redis]')",
        ) from None
    try:
        parse_url(text)  # type: ignore[no-untyped-call]
    except Exception:  # ValueError mostly; anything else is just as fatal
        raise ConfigError(name, _shorten(redact_url(text)), _REDIS_ACCEPTED) from None
    return text


def _parse_redis_url(name: str, raw: str) -> str:
    return check_redis_url(name, raw)


def _parse_addr(name: str, raw: str) -> str:
    import ipaddress

    text = raw.strip()
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if text != "localhost":
            raise ConfigError(
                name, raw, "an IP address to bind to, e.g. 127.0.0.1, 0.0.0.0 or ::1"
            ) from None
    return text


class _Var(NamedTuple):
    variable: str
    field: str
    parse: Callable[[str, str], Any]
    accepted: str


def _duration(name: str, raw: str) -> Optional[float]:
    return parse_duration(name, raw)


def _duration_or_off(name: str, raw: str) -> Optional[float]:
    return parse_duration(name, raw, allow_off=True)


def _keepalive_duration(name: str, raw: str) -> Optional[float]:
    return parse_duration(name, raw, maximum=MAX_KEEPALIVE_SECONDS)


def _keepalive_duration_or_off(name: str, raw: str) -> Optional[float]:
    return parse_duration(name, raw, allow_off=True, maximum=MAX_KEEPALIVE_SECONDS)


_KEEPALIVE_ACCEPTED = f"a duration up to {MAX_KEEPALIVE_SECONDS} s (the Linux kernel's limit)"


# The environment contract of DESIGN.md, as data.  AZGUARD_AUTO is read by the
# start-up hook, but is listed here so `azguard env` reports and validates it.
_SPEC: Tuple[_Var, ...] = (
    _Var("AZGUARD_AUTO", "", _parse_auto, AUTO_ACCEPTED),
    _Var("AZGUARD_KEEPALIVE", "keepalive", _parse_bool, "1 or 0"),
    _Var("AZGUARD_KEEPALIVE_IDLE", "keepalive_idle", _keepalive_duration, _KEEPALIVE_ACCEPTED),
    _Var(
        "AZGUARD_KEEPALIVE_INTERVAL",
        "keepalive_interval",
        _keepalive_duration,
        _KEEPALIVE_ACCEPTED,
    ),
    _Var(
        "AZGUARD_KEEPALIVE_COUNT",
        "keepalive_count",
        lambda n, r: _parse_int(n, r, 1, MAX_KEEPALIVE_COUNT),
        f"a whole number from 1 to {MAX_KEEPALIVE_COUNT} (the Linux kernel's limit)",
    ),
    _Var("AZGUARD_USER_TIMEOUT", "user_timeout", _duration_or_off, "a duration or off"),
    _Var("AZGUARD_MAX_IDLE", "max_idle", _duration_or_off, "a duration or off"),
    _Var("AZGUARD_MAX_AGE", "max_age", _duration_or_off, "a duration or off"),
    _Var(
        "AZGUARD_ACK_TIMEOUT",
        "ack_timeout",
        _keepalive_duration_or_off,
        _KEEPALIVE_ACCEPTED + " or off",
    ),
    _Var(
        "AZGUARD_DEFAULT_TIMEOUT",
        "default_timeout",
        _parse_timeout_pair,
        "connect,read durations, one duration, or off",
    ),
    _Var(
        "AZGUARD_RETRIES",
        "retries",
        lambda n, r: _parse_int(n, r, 0, 100),
        "a whole number from 0 to 100",
    ),
    _Var(
        "AZGUARD_RETRY_NON_IDEMPOTENT",
        "retry_non_idempotent",
        _parse_mode,
        "unsent, never or always",
    ),
    _Var("AZGUARD_BREAKER", "breaker", _parse_bool, "1 or 0"),
    _Var(
        "AZGUARD_BREAKER_FAIL_MAX",
        "breaker_fail_max",
        lambda n, r: _parse_int(n, r, 1, 1_000_000),
        "a whole number from 1 to 1000000",
    ),
    _Var(
        "AZGUARD_BREAKER_RESET_TIMEOUT",
        "breaker_reset_timeout",
        _duration,
        DURATION_ACCEPTED,
    ),
    _Var(
        "AZGUARD_BREAKER_STATUSES",
        "breaker_statuses",
        _parse_statuses,
        "comma-separated status codes",
    ),
    _Var(
        "AZGUARD_TIMEOUT_FAIL_FAST",
        "timeout_fail_fast",
        _parse_fail_fast,
        "a whole number from 0 to 1000000, or off (0)",
    ),
    _Var(
        "AZGUARD_FALLBACK",
        "fallback_status",
        _parse_fallback,
        "raise or a 4xx/5xx status code",
    ),
    _Var("AZGUARD_REDIS_URL", "redis_url", _parse_redis_url, "a redis:// URL"),
    _Var("AZGUARD_DNS_RECHECK", "dns_recheck", _duration_or_off, "a duration or off"),
    _Var(
        "AZGUARD_METRICS_PORT",
        "metrics_port",
        lambda n, r: _parse_int(n, r, 1, 65535),
        "a TCP port from 1 to 65535",
    ),
    _Var("AZGUARD_METRICS_ADDR", "metrics_addr", _parse_addr, "an IP address"),
    _Var("AZGUARD_OTEL", "otel", _parse_bool, "1 or 0"),
)

#: Every ``AZGUARD_*`` variable the library understands.
ENV_VARS: Tuple[str, ...] = tuple(v.variable for v in _SPEC)


# AZGUARD_* names that are not settings but belong to this project's own
# tooling (the test suite's switch that turns skips into failures in CI).
_NOT_SETTINGS: Final = frozenset({"AZGUARD_REQUIRE_CHAOS"})


def unknown_env_vars(
    environ: Optional[Mapping[str, str]] = None,
) -> List[Tuple[str, Optional[str]]]:
    """``(name, closest known variable or None)`` for every ``AZGUARD_*``
    name in the environment that is not a setting, sorted by name.

    The prefix is matched case-insensitively (``azguard_retries`` is a typo
    too); such variables are ignored by the configuration.
    """
    env = os.environ if environ is None else environ
    known = set(ENV_VARS) | _NOT_SETTINGS
    found = []
    for name in sorted(env):
        if not name.upper().startswith("AZGUARD_") or name in known:
            continue
        close = difflib.get_close_matches(name.upper(), ENV_VARS, n=1, cutoff=0.6)
        found.append((name, close[0] if close else None))
    return found


def unknown_env_messages(environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """One line per unknown ``AZGUARD_*`` name (see :func:`unknown_env_vars`)."""
    lines = []
    for name, close in unknown_env_vars(environ):
        hint = f"did you mean {close}?" if close else "see `azguard env --help` for the known ones"
        lines.append(f"{name} is not a known variable and is ignored; {hint}")
    return lines


class EnvValue(NamedTuple):
    """One effective setting and where it came from."""

    variable: str
    field: str
    value: Any
    source: str  # "default" or the variable name
    raw: Optional[str]


def describe_env(environ: Optional[Mapping[str, str]] = None) -> List[EnvValue]:
    """Parse every ``AZGUARD_*`` variable; raise ``ConfigError`` on the first bad one.

    Unset and empty variables keep the default.  ``AZGUARD_AUTO`` has no field.
    """
    env = os.environ if environ is None else environ
    defaults = GuardConfig.__dataclass_fields__
    result = []
    for var in _SPEC:
        raw = env.get(var.variable)
        if raw is None or raw.strip() == "":
            default = defaults[var.field].default if var.field else False
            result.append(EnvValue(var.variable, var.field, default, "default", None))
            continue
        value = var.parse(var.variable, raw)
        shown = redact_url(raw) if var.variable == "AZGUARD_REDIS_URL" else raw
        result.append(EnvValue(var.variable, var.field, value, var.variable, shown))
    return [item for item in result if item.field or item.variable == "AZGUARD_AUTO"]


# --------------------------------------------------------------------------
# Validation of a constructed config (Python callers bypass the parsers).


def _check(cond: bool, name: str, value: object, accepted: str) -> None:
    if not cond:
        raise ConfigError(name, value, accepted)


def _shown(value: object) -> object:
    # repr() of an int past 4300 digits raises ValueError on Python 3.11+.
    if isinstance(value, int) and value.bit_length() > 256:
        return f"<an integer of {value.bit_length()} bits>"
    return value


def _is_number(value: object) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _positive(
    cfg: GuardConfig, name: str, optional: bool, maximum: float = MAX_DURATION_SECONDS
) -> None:
    value = getattr(cfg, name)
    if optional and value is None:
        return
    _check(
        _is_number(value) and 0 < value <= maximum,
        f"GuardConfig.{name}",
        _shown(value),
        f"a number of seconds {_range_text(maximum)}" + (" or None" if optional else ""),
    )


def _whole(cfg: GuardConfig, name: str, minimum: int, maximum: int, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if optional and value is None:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum
    _check(
        ok,
        f"GuardConfig.{name}",
        _shown(value),
        f"a whole number from {minimum} to {maximum}" + (" or None" if optional else ""),
    )


def _validate(cfg: GuardConfig) -> None:
    for name in ("keepalive", "breaker", "otel"):
        _check(
            isinstance(getattr(cfg, name), bool),
            f"GuardConfig.{name}",
            getattr(cfg, name),
            "True or False",
        )
    for name in ("keepalive_idle", "keepalive_interval"):
        _positive(cfg, name, optional=False, maximum=MAX_KEEPALIVE_SECONDS)
    _positive(cfg, "ack_timeout", optional=True, maximum=MAX_KEEPALIVE_SECONDS)
    _positive(cfg, "breaker_reset_timeout", optional=False)
    for name in ("user_timeout", "max_idle", "max_age", "dns_recheck"):
        _positive(cfg, name, optional=True)
    for name in ("health_rtt_degraded", "health_rtt_unhealthy"):
        _positive(cfg, name, optional=False)
    _check(
        cfg.health_rtt_degraded <= cfg.health_rtt_unhealthy,
        "GuardConfig.health_rtt_degraded",
        cfg.health_rtt_degraded,
        "a value not above health_rtt_unhealthy",
    )
    _whole(cfg, "keepalive_count", 1, MAX_KEEPALIVE_COUNT)
    _whole(cfg, "retries", 0, MAX_RETRIES)
    _whole(cfg, "breaker_fail_max", 1, MAX_COUNTER)
    _whole(cfg, "timeout_fail_fast", 0, MAX_COUNTER)  # 0: off
    # tcpi_total_retrans is a u32; a C int bounds it in practice.
    _whole(cfg, "health_retrans_degraded", 0, 2**31 - 1)
    _whole(cfg, "health_retrans_unhealthy", 0, 2**31 - 1)
    _check(
        cfg.policy is None or isinstance(cfg.policy, Policy),
        "GuardConfig.policy",
        cfg.policy,
        "None or a requests_azguard.Policy",
    )
    _check(
        cfg.retry_non_idempotent in RETRY_NON_IDEMPOTENT_MODES,
        "GuardConfig.retry_non_idempotent",
        cfg.retry_non_idempotent,
        "one of " + ", ".join(RETRY_NON_IDEMPOTENT_MODES),
    )
    dt = cfg.default_timeout
    _check(
        dt is None
        or (
            isinstance(dt, tuple)
            and len(dt) == 2
            and all(_is_number(x) and 0 < x <= MAX_DURATION_SECONDS for x in dt)
        ),
        "GuardConfig.default_timeout",
        dt,
        f"None or a (connect, read) tuple of seconds {_range_text(MAX_DURATION_SECONDS)}",
    )
    statuses = cfg.breaker_statuses
    _check(
        isinstance(statuses, frozenset)
        and all(isinstance(s, int) and 100 <= s <= 599 for s in statuses),
        "GuardConfig.breaker_statuses",
        statuses,
        "a frozenset of HTTP status codes from 100 to 599",
    )
    fb = cfg.fallback_status
    _check(
        fb is None or (isinstance(fb, int) and not isinstance(fb, bool) and 400 <= fb <= 599),
        "GuardConfig.fallback_status",
        fb,
        "None (raise) or an HTTP status code from 400 to 599",
    )
    if cfg.redis_url is not None:
        check_redis_url("GuardConfig.redis_url", cfg.redis_url)
    port = cfg.metrics_port
    _check(
        port is None
        or (isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535),
        "GuardConfig.metrics_port",
        port,
        "None or a TCP port from 1 to 65535",
    )
    _check(
        isinstance(cfg.metrics_addr, str),
        "GuardConfig.metrics_addr",
        cfg.metrics_addr,
        "an address string",
    )
