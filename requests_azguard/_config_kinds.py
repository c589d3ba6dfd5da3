"""Kinds of setting: how a value is read from text and judged in Python.

A kind holds one accepted range and one predicate over it (``admits``), and
both ways in go through that predicate: ``parse`` turns an ``AZGUARD_*``
string into a value, ``check`` judges a value a Python caller gave
``GuardConfig``.  Both raise ``ConfigError`` naming the setting, the value and
what is accepted, and both messages state the same ``limits``, so the
environment and code cannot accept different values.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any, Final, FrozenSet, Tuple

from ._errors import ConfigError
from ._policy import Policy
from ._redact import redact_url

__all__ = [
    "AUTO_ACCEPTED",
    "Address",
    "Auto",
    "Choice",
    "DURATION_ACCEPTED",
    "Duration",
    "Flag",
    "Kind",
    "PolicyKind",
    "RedisUrl",
    "StatusCode",
    "StatusCodes",
    "TimeoutPair",
    "Whole",
    "check_redis_url",
]

_OFF: Final = frozenset({"off", "none", "disabled"})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})

_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}
# Whole numbers: long digit strings are refused before int() (Python 3.11+
# raises ValueError past 4300 digits) and anything that must fit a C int does.
_MAX_DIGITS: Final = 12

DURATION_ACCEPTED: Final = "a duration such as 30, 2.5, 500ms, 30s or 2m"
_BOOL_ACCEPTED: Final = "1 or 0 (also true/false, yes/no, on/off)"
#: What AZGUARD_AUTO accepts (the start-up hook keeps its own copy, in step).
AUTO_ACCEPTED: Final = _BOOL_ACCEPTED + ", or requests"

# What ``lex`` returns for text that is not even spelt like a value.
_INVALID: Final = object()


def _shorten(raw: str) -> str:
    # An error message must stay readable whatever was pasted in.
    return raw if len(raw) <= 80 else f"{raw[:40]}...({len(raw)} characters)"


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


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Kind:
    """One kind of value with its range.

    ``off`` are the spellings that turn the setting off in the environment
    (they give ``off_value``); ``optional`` is whether ``None`` is a value in
    Python (an unset variable, where no spelling says so).
    """

    off: FrozenSet[str] = frozenset()
    off_value: Any = None
    optional: bool = False
    #: The accepted range, stated alike by both paths' messages.
    limits: str = ""
    #: What an error from the environment says is accepted.
    env_accepted: str = ""
    #: What an error from a Python value says is accepted.
    code_accepted: str = ""

    def lex(self, raw: str) -> Any:
        """The value ``raw`` spells, in range or not; ``_INVALID`` if none."""
        return _INVALID

    def admits(self, value: Any) -> bool:
        """Whether ``value`` is of this kind and in range: the one predicate."""
        return False

    def parse(self, name: str, raw: str) -> Any:
        if raw.strip().lower() in self.off:
            return self.off_value
        value = self.lex(raw)
        if value is _INVALID or not self.admits(value):
            raise ConfigError(name, _shorten(raw), self.env_accepted)
        return value

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if not self.admits(value):
            raise ConfigError(name, _shown(value), self.code_accepted)

    def echo(self, raw: str) -> str:
        """``raw`` as it may be shown back (``azguard env``)."""
        return raw


def _none_or(optional: bool) -> str:
    return " or None" if optional else ""


class Flag(Kind):
    env_accepted = _BOOL_ACCEPTED
    code_accepted = "True or False"

    def lex(self, raw: str) -> Any:
        text = raw.strip().lower()
        return True if text in _TRUE else False if text in _FALSE else _INVALID

    def admits(self, value: Any) -> bool:
        return isinstance(value, bool)


class Auto(Flag):
    """AZGUARD_AUTO: a flag, or ``"requests"`` (requests only, no SDK rebinding)."""

    env_accepted = code_accepted = AUTO_ACCEPTED

    def lex(self, raw: str) -> Any:
        return "requests" if raw.strip().lower() == "requests" else super().lex(raw)

    def admits(self, value: Any) -> bool:
        return isinstance(value, bool) or value == "requests"


class Duration(Kind):
    """Seconds, greater than zero and at most ``maximum`` (``why`` says why)."""

    def __init__(self, maximum: float, why: str, *, off: bool = False) -> None:
        self.maximum = maximum
        self.off = _OFF if off else frozenset()
        self.optional = off
        self.limits = f"greater than zero and at most {maximum:.0f} s ({why})"
        self.env_accepted = f"{DURATION_ACCEPTED}, {self.limits}" + (", or off" if off else "")
        self.code_accepted = f"a number of seconds {self.limits}{_none_or(off)}"

    def lex(self, raw: str) -> Any:
        text = raw.strip().lower()
        # Bounded before the regex and float(): a 5000-digit value is refused,
        # not parsed.
        match = _DURATION_RE.match(text) if len(text) <= 64 else None
        if not match:
            return _INVALID
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]

    def admits(self, value: Any) -> bool:
        return _is_number(value) and 0 < value <= self.maximum


class TimeoutPair(Kind):
    """``(connect, read)`` seconds; one duration in the environment sets both."""

    off = _OFF
    optional = True

    def __init__(self, each: Duration) -> None:
        self.each = each
        self.limits = f"each {each.limits}"
        self.env_accepted = (
            "one duration for both connect and read (e.g. 30s), "
            f"'connect,read' (e.g. 5,60 or 500ms,1m), {self.limits}, or off"
        )
        self.code_accepted = f"None or a (connect, read) tuple of seconds, {self.limits}"

    def lex(self, raw: str) -> Any:
        parts = [self.each.lex(p) for p in re.split(r"\s*,\s*", raw.strip())]
        if len(parts) not in (1, 2) or _INVALID in parts:
            return _INVALID
        return (parts[0], parts[-1])

    def admits(self, value: Any) -> bool:
        return isinstance(value, tuple) and len(value) == 2 and all(map(self.each.admits, value))


class Whole(Kind):
    """A whole number from ``minimum`` to ``maximum``; ``off`` spells ``0``."""

    def __init__(
        self,
        minimum: int,
        maximum: int,
        *,
        noun: str = "a whole number",
        why: str = "",
        off: bool = False,
        optional: bool = False,
    ) -> None:
        self.minimum, self.maximum = minimum, maximum
        if off:
            self.off, self.off_value = _OFF, 0
        self.optional = optional
        self.limits = f"from {minimum} to {maximum}" + (f" ({why})" if why else "")
        self.env_accepted = f"{noun} {self.limits}" + (", or off (0)" if off else "")
        self.code_accepted = f"{noun} {self.limits}{_none_or(optional)}"

    def lex(self, raw: str) -> Any:
        text = raw.strip()
        if len(text) > _MAX_DIGITS or not re.fullmatch(r"[0-9]+", text):
            return _INVALID
        return int(text)

    def admits(self, value: Any) -> bool:
        return _is_whole(value) and self.minimum <= value <= self.maximum


def _status(text: str) -> Any:
    return int(text) if re.fullmatch(r"[0-9]{3}", text) else _INVALID


class StatusCode(Kind):
    """One HTTP status code in a range, or the ``off`` word, which is ``None``."""

    optional = True

    def __init__(self, minimum: int, maximum: int, *, off: str, example: int) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.off = frozenset({off})
        self.limits = f"an HTTP status code from {minimum} to {maximum}"
        self.env_accepted = f"'{off}' or {self.limits} such as {example}"
        self.code_accepted = f"None ({off}) or {self.limits}"

    def lex(self, raw: str) -> Any:
        return _status(raw.strip())

    def admits(self, value: Any) -> bool:
        return _is_whole(value) and self.minimum <= value <= self.maximum


class StatusCodes(Kind):
    """A non-empty set of HTTP status codes, comma-separated in the environment."""

    def __init__(self, minimum: int, maximum: int, *, example: str) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.limits = f"HTTP status codes from {minimum} to {maximum}"
        self.env_accepted = f"comma-separated {self.limits}, e.g. {example}"
        self.code_accepted = f"a non-empty frozenset of {self.limits}"

    def lex(self, raw: str) -> Any:
        codes = [_status(p.strip()) for p in raw.split(",") if p.strip()]
        return _INVALID if _INVALID in codes else frozenset(codes)

    def admits(self, value: Any) -> bool:
        return (
            isinstance(value, frozenset)
            and len(value) > 0
            and all(_is_whole(s) and self.minimum <= s <= self.maximum for s in value)
        )


class Choice(Kind):
    def __init__(self, choices: Tuple[str, ...]) -> None:
        self.choices = choices
        self.limits = self.env_accepted = self.code_accepted = "one of " + ", ".join(choices)

    def lex(self, raw: str) -> Any:
        return raw.strip().lower()

    def admits(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.choices


class Address(Kind):
    """An address to bind a listening socket to."""

    limits = env_accepted = code_accepted = (
        "an IP address to bind to, e.g. 127.0.0.1, 0.0.0.0 or ::1"
    )

    def lex(self, raw: str) -> Any:
        return raw.strip()

    def admits(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return value == "localhost"
        return True


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


class RedisUrl(Kind):
    """A Redis URL, judged by redis-py's parser; never echoed unredacted."""

    optional = True
    limits = env_accepted = _REDIS_ACCEPTED
    code_accepted = "None or " + _REDIS_ACCEPTED

    def parse(self, name: str, raw: str) -> Any:
        return check_redis_url(name, raw)

    def check(self, name: str, value: Any) -> None:
        if value is not None:
            check_redis_url(name, value)

    def echo(self, raw: str) -> str:
        return redact_url(raw)


class PolicyKind(Kind):
    """A failure policy (Python only)."""

    optional = True
    limits = code_accepted = "None or a requests_azguard.Policy"

    def admits(self, value: Any) -> bool:
        return isinstance(value, Policy)
