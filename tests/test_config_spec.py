"""One spec, two ways in: for every setting, the environment and Python
accept and refuse the same boundary values, with the same range named."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, List, NamedTuple, Optional

import pytest

from requests_azguard import ConfigError, GuardConfig, Policy
from requests_azguard._config import _SPEC
from requests_azguard._config_kinds import (
    Address,
    Choice,
    Duration,
    Flag,
    Kind,
    RedisUrl,
    StatusCode,
    StatusCodes,
    TimeoutPair,
    Whole,
)
from requests_azguard._config_spec import ENV_SETTINGS, SETTINGS, Setting


class Case(NamedTuple):
    what: str
    raw: str  # the value spelt for the environment
    value: Any  # the same value in Python
    accepted: bool


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _duration_cases(kind: Duration) -> List[Case]:
    top = float(kind.maximum)
    return [
        Case("below min", "0", 0.0, False),
        Case("negative", "-1", -1.0, False),
        Case("min", "0.001", 0.001, True),
        Case("max", _seconds(top), top, True),
        Case("above max", _seconds(top + 0.001), top + 0.001, False),
    ]


def _range_cases(low: int, high: int, spell: Any = str) -> List[Case]:
    return [
        Case("below min", spell(low - 1) if low > 0 else "-1", low - 1, False),
        Case("min", spell(low), low, True),
        Case("max", spell(high), high, True),
        Case("above max", spell(high + 1), high + 1, False),
    ]


def boundaries(kind: Kind) -> List[Case]:
    """Boundary values derived from the kind's own range."""
    if isinstance(kind, Duration):
        return _duration_cases(kind)
    if isinstance(kind, TimeoutPair):
        each = _duration_cases(kind.each)
        return [
            *(Case(f"connect {c.what}", f"{c.raw},5", (c.value, 5.0), c.accepted) for c in each),
            *(Case(f"read {c.what}", f"5,{c.raw}", (5.0, c.value), c.accepted) for c in each),
            *(Case(f"both {c.what}", c.raw, (c.value, c.value), c.accepted) for c in each),
        ]
    if isinstance(kind, (Whole, StatusCode)):
        return _range_cases(kind.minimum, kind.maximum)
    if isinstance(kind, StatusCodes):
        sets = [
            Case(c.what, c.raw, frozenset({c.value}), c.accepted)
            for c in _range_cases(kind.minimum, kind.maximum)
        ]
        return [*sets, Case("empty", ",", frozenset(), False)]
    if isinstance(kind, Choice):
        good = [Case(f"choice {c}", c, c, True) for c in kind.choices]
        return [*good, Case("no choice", "sometimes", "sometimes", False)]
    if isinstance(kind, Flag):
        return [
            Case("on", "1", True, True),
            Case("off", "0", False, True),
            Case("2", "2", 2, False),
        ]
    if isinstance(kind, Address):
        good = [Case(a, a, a, True) for a in ("127.0.0.1", "0.0.0.0", "::1", "localhost")]
        return [*good, Case("bad", "256.0.0.1", "256.0.0.1", False)]
    if isinstance(kind, RedisUrl):
        url = "redis://127.0.0.1:6379/0"
        return [Case("url", url, url, True), Case("http", "http://h/", "http://h/", False)]
    raise AssertionError(f"no boundary values for {type(kind).__name__}: add them here")


def _off_cases(setting: Setting) -> List[Case]:
    kind = setting.kind
    if kind.off:
        return [Case(f"off as {w}", w, kind.off_value, True) for w in sorted(kind.off)]
    if isinstance(kind, Flag):
        return [Case("off", "off", False, True)]
    if kind.optional:
        return []  # None has no spelling here: see test_none_is_off_or_unset
    return [Case("off", "off", None, False)]


def _env(setting: Setting, raw: str) -> Any:
    return GuardConfig.from_env({setting.variable: raw})


def _code(setting: Setting, value: Any) -> Any:
    return GuardConfig(**{setting.field: value})


def _error(build: Any, *args: Any) -> Optional[ConfigError]:
    try:
        build(*args)
    except ConfigError as exc:
        return exc
    return None


BOTH = [s for s in SETTINGS if s.variable and s.field]


@pytest.mark.parametrize("setting", BOTH, ids=lambda s: s.variable)
def test_environment_and_python_agree_at_every_boundary(setting: Setting) -> None:
    for case in boundaries(setting.kind) + _off_cases(setting):
        env_error = _error(_env, setting, case.raw)
        code_error = _error(_code, setting, case.value)
        where = f"{setting.variable} {case.what}: {case.raw!r} / {case.value!r}"
        assert (env_error is None) == (code_error is None) == case.accepted, where
        if case.accepted:
            assert _env(setting, case.raw) == _code(setting, case.value), where
            assert getattr(_env(setting, case.raw), setting.field) == case.value, where
            continue
        assert env_error is not None and code_error is not None
        assert env_error.name == setting.variable, where
        assert code_error.name == f"GuardConfig.{setting.field}", where
        for error in (env_error, code_error):
            assert str(error).startswith(f"{error.name}="), where
            assert setting.kind.limits in error.accepted, (where, error.accepted)


@pytest.mark.parametrize("setting", BOTH, ids=lambda s: s.variable)
def test_none_is_off_or_unset(setting: Setting) -> None:
    kind = setting.kind
    if kind.optional and not kind.off:
        # None has no spelling: it is what an unset variable means.
        assert setting.default is None
        assert getattr(GuardConfig.from_env({setting.variable: ""}), setting.field) is None
        assert _error(_env, setting, "off") is not None
    elif not kind.optional:
        assert _error(_code, setting, None) is not None


def test_python_only_fields_check_their_range() -> None:
    for name in ("health_rtt_degraded", "health_rtt_unhealthy"):
        with pytest.raises(ConfigError, match=f"GuardConfig.{name}"):
            GuardConfig(**{name: 0.0})
    for name in ("health_retrans_degraded", "health_retrans_unhealthy"):
        with pytest.raises(ConfigError, match="from 0 to 2147483647"):
            GuardConfig(**{name: 2**31})
    assert GuardConfig(policy=Policy()).policy == Policy()
    with pytest.raises(ConfigError, match="requests_azguard.Policy"):
        GuardConfig(policy="strict")  # type: ignore[arg-type]


def test_guard_config_fields_are_the_spec() -> None:
    fields = dataclasses.fields(GuardConfig)
    assert [f.name for f in fields] == [s.field for s in SETTINGS if s.field]
    defaults = {s.field: s.default for s in SETTINGS if s.field}
    assert {f.name: f.default for f in fields} == defaults
    assert GuardConfig() == GuardConfig(**defaults)
    assert _SPEC == ENV_SETTINGS  # what the docs and `azguard env` walk


@pytest.mark.parametrize("setting", ENV_SETTINGS, ids=lambda s: s.variable)
def test_documented_numbers_are_the_spec_range(setting: Setting) -> None:
    """The docs' accepted text may say less than an error does, never other numbers."""
    number = re.compile(r"\b\d+(?:\.\d+)?\b")
    assert set(number.findall(setting.accepted)) <= set(
        number.findall(setting.kind.env_accepted)
    ), setting.accepted
