"""GuardConfig: every AZGUARD_* variable with a good and a bad value."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from requests_azguard import ConfigError, GuardConfig
from requests_azguard._config import ENV_VARS, describe_env, parse_duration

# variable -> (good raw value, expected field value, bad raw value)
CASES = {
    "AZGUARD_AUTO": ("1", True, "maybe"),
    "AZGUARD_KEEPALIVE": ("0", False, "2"),
    "AZGUARD_KEEPALIVE_IDLE": ("45s", 45.0, "abc"),
    "AZGUARD_KEEPALIVE_INTERVAL": ("500ms", 0.5, "-1"),
    "AZGUARD_KEEPALIVE_COUNT": ("5", 5, "0"),
    "AZGUARD_USER_TIMEOUT": ("off", None, "30x"),
    "AZGUARD_MAX_IDLE": ("2m", 120.0, "forever"),
    "AZGUARD_MAX_AGE": ("off", None, "0"),
    "AZGUARD_ACK_TIMEOUT": ("1.5", 1.5, "1,5"),
    "AZGUARD_DEFAULT_TIMEOUT": ("5,60", (5.0, 60.0), "5,6,7"),
    "AZGUARD_RETRIES": ("4", 4, "-2"),
    "AZGUARD_RETRY_NON_IDEMPOTENT": ("never", "never", "sometimes"),
    "AZGUARD_BREAKER": ("0", False, "nope"),
    "AZGUARD_BREAKER_FAIL_MAX": ("10", 10, "0"),
    "AZGUARD_BREAKER_RESET_TIMEOUT": ("45s", 45.0, "off"),
    "AZGUARD_BREAKER_STATUSES": ("500,503", frozenset({500, 503}), "5xx"),
    "AZGUARD_TIMEOUT_FAIL_FAST": ("3", 3, "three"),
    "AZGUARD_FALLBACK": ("503", 503, "999"),
    "AZGUARD_REDIS_URL": ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", "http://x"),
    "AZGUARD_DNS_RECHECK": ("30s", 30.0, "soon"),
    "AZGUARD_METRICS_PORT": ("9464", 9464, "70000"),
    "AZGUARD_METRICS_ADDR": ("0.0.0.0", "0.0.0.0", "not an address"),
    "AZGUARD_OTEL": ("1", True, "otel"),
}


def test_every_variable_has_a_case() -> None:
    assert set(CASES) == set(ENV_VARS)


@pytest.mark.parametrize("variable", sorted(CASES))
def test_good_value(variable: str) -> None:
    raw, expected, _ = CASES[variable]
    (item,) = [i for i in describe_env({variable: raw}) if i.variable == variable]
    assert item.value == expected
    assert item.source == variable
    if item.field:
        cfg = GuardConfig.from_env({variable: raw})
        assert getattr(cfg, item.field) == expected


@pytest.mark.parametrize("variable", sorted(CASES))
def test_bad_value_names_variable_value_and_accepted(variable: str) -> None:
    _, _, bad = CASES[variable]
    with pytest.raises(ConfigError) as info:
        GuardConfig.from_env({variable: bad})
    message = str(info.value)
    assert variable in message
    assert repr(bad) in message
    assert "expected" in message
    assert info.value.name == variable


def test_defaults_untouched_by_empty_environment() -> None:
    assert GuardConfig.from_env({}) == GuardConfig()
    assert GuardConfig.from_env({"AZGUARD_MAX_IDLE": ""}) == GuardConfig()


def test_from_env_reads_only_when_called(monkeypatch: pytest.MonkeyPatch) -> None:
    import requests_azguard

    monkeypatch.setenv("AZGUARD_KEEPALIVE_IDLE", "abc")
    # Importing and building from an explicit mapping never touches os.environ.
    assert requests_azguard.GuardConfig.from_env({}).keepalive_idle == 30.0
    with pytest.raises(ConfigError):
        requests_azguard.GuardConfig.from_env()


def test_defaults_stay_below_load_balancer_idle_timeouts() -> None:
    cfg = GuardConfig()
    # Azure LB 240 s is the shortest common middlebox idle timeout.
    assert cfg.keepalive_idle < 240
    assert cfg.keepalive_idle + cfg.keepalive_interval * cfg.keepalive_count < 240


@pytest.mark.parametrize(
    "raw, seconds",
    [("30", 30.0), ("2.5", 2.5), ("500ms", 0.5), ("30s", 30.0), ("2m", 120.0), (" 1h ", 3600.0)],
)
def test_duration_units(raw: str, seconds: float) -> None:
    assert parse_duration("X", raw) == seconds


@pytest.mark.parametrize("raw", ["", "1e3", "nan", "inf", "-5", "0", "1 2", "5d"])
def test_duration_rejects(raw: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration("X", raw)


def test_python_values_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="GuardConfig.max_idle"):
        GuardConfig(max_idle=-1.0)
    with pytest.raises(ConfigError, match="GuardConfig.retry_non_idempotent"):
        GuardConfig(retry_non_idempotent="sometimes")
    with pytest.raises(ConfigError, match="GuardConfig.keepalive"):
        GuardConfig(keepalive="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="GuardConfig.default_timeout"):
        GuardConfig(default_timeout=(5.0,))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="GuardConfig.breaker_statuses"):
        GuardConfig(breaker_statuses={503})  # type: ignore[arg-type]


def test_frozen_replace_and_pickle() -> None:
    cfg = GuardConfig(max_idle=5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_idle = 1.0  # type: ignore[misc]
    assert cfg.replace(max_idle=None).max_idle is None
    with pytest.raises(ConfigError):
        cfg.replace(max_idle=0)
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_overrides_win_over_environment() -> None:
    cfg = GuardConfig.from_env({"AZGUARD_RETRIES": "7"}, retries=1)
    assert cfg.retries == 1


def test_redis_password_is_redacted() -> None:
    url = "redis://user:s3cr3t-pw@127.0.0.1:6379/0"
    cfg = GuardConfig(redis_url=url)
    assert "s3cr3t-pw" not in repr(cfg)
    assert "s3cr3t-pw" not in str(cfg)
    assert cfg.redis_url == url
    with pytest.raises(ConfigError) as info:
        GuardConfig.from_env({"AZGUARD_REDIS_URL": "http://u:s3cr3t-pw@h"})
    assert "s3cr3t-pw" not in str(info.value)
    items = describe_env({"AZGUARD_REDIS_URL": url})
    (item,) = [i for i in items if i.variable == "AZGUARD_REDIS_URL"]
    assert "s3cr3t-pw" not in str(item.raw)
