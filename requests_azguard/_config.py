"""GuardConfig: every knob in one frozen value, validated by the one spec.

Each field's default and accepted values are its ``Setting`` in
``_config_spec``, which also drives reading the environment
(``_config_env``): a value is accepted in Python exactly when its spelling
is accepted in ``AZGUARD_*``.  This module also keeps the names other
modules have imported from ``_config``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Dict, FrozenSet, Mapping, Optional

from ._config_env import EnvValue, describe_env, unknown_env_vars
from ._config_env import unknown_env_messages as unknown_env_messages
from ._config_kinds import _FALSE as _FALSE
from ._config_kinds import _TRUE as _TRUE
from ._config_kinds import AUTO_ACCEPTED as AUTO_ACCEPTED
from ._config_kinds import DURATION_ACCEPTED as DURATION_ACCEPTED
from ._config_kinds import check_redis_url as check_redis_url
from ._config_spec import DEFAULTS as _D
from ._config_spec import ENV_SETTINGS, ENV_VARS, SETTINGS, TimeoutPairValue, parse_timeout_pair
from ._config_spec import MAX_COUNTER as MAX_COUNTER
from ._config_spec import MAX_DURATION_SECONDS as MAX_DURATION_SECONDS
from ._config_spec import MAX_KEEPALIVE_COUNT as MAX_KEEPALIVE_COUNT
from ._config_spec import MAX_KEEPALIVE_SECONDS as MAX_KEEPALIVE_SECONDS
from ._config_spec import MAX_RETRIES as MAX_RETRIES
from ._config_spec import RETRY_NON_IDEMPOTENT_MODES as RETRY_NON_IDEMPOTENT_MODES
from ._config_spec import parse_duration as parse_duration
from ._errors import ConfigError, UnknownVariableWarning
from ._policy import Policy
from ._redact import redact_url

__all__ = ["ENV_VARS", "EnvValue", "GuardConfig", "describe_env", "unknown_env_vars"]

# Old names importers still use; the spec, the kinds and the redaction
# function have their own modules now.
_SPEC = ENV_SETTINGS
_parse_timeout_pair = parse_timeout_pair
TimeoutPair = TimeoutPairValue
_redact_url = redact_url


@dataclasses.dataclass(frozen=True)
class GuardConfig:
    """Immutable configuration of the guard.

    Durations are seconds (floats); ``None`` means the feature is off.
    Build one from Python, from the environment with :meth:`from_env`, or
    derive a variant with :meth:`replace`.  Defaults and accepted values
    are listed in ``_config_spec.SETTINGS``.
    """

    keepalive: bool = _D["keepalive"]
    keepalive_idle: float = _D["keepalive_idle"]
    keepalive_interval: float = _D["keepalive_interval"]
    keepalive_count: int = _D["keepalive_count"]
    user_timeout: Optional[float] = _D["user_timeout"]
    max_idle: Optional[float] = _D["max_idle"]
    max_age: Optional[float] = _D["max_age"]
    ack_timeout: Optional[float] = _D["ack_timeout"]
    default_timeout: Optional[TimeoutPair] = _D["default_timeout"]
    retries: int = _D["retries"]
    retry_non_idempotent: str = _D["retry_non_idempotent"]
    breaker: bool = _D["breaker"]
    breaker_fail_max: int = _D["breaker_fail_max"]
    breaker_reset_timeout: float = _D["breaker_reset_timeout"]
    breaker_statuses: FrozenSet[int] = _D["breaker_statuses"]
    timeout_fail_fast: int = _D["timeout_fail_fast"]
    fallback_status: Optional[int] = _D["fallback_status"]
    redis_url: Optional[str] = dataclasses.field(default=_D["redis_url"], repr=False)
    dns_recheck: Optional[float] = _D["dns_recheck"]
    metrics_port: Optional[int] = _D["metrics_port"]
    metrics_addr: str = _D["metrics_addr"]
    # Report the metrics through the OpenTelemetry API (the ``otel`` extra).
    otel: bool = _D["otel"]
    # Health grade thresholds (Python only): rtt in seconds, retransmits.
    health_rtt_degraded: float = _D["health_rtt_degraded"]
    health_rtt_unhealthy: float = _D["health_rtt_unhealthy"]
    health_retrans_degraded: int = _D["health_retrans_degraded"]
    health_retrans_unhealthy: int = _D["health_retrans_unhealthy"]
    #: The failure policy's rows for this config (Python only); None follows
    #: the process-wide table (``requests_azguard.set_decision``).
    policy: Optional[Policy] = _D["policy"]

    def __post_init__(self) -> None:
        for setting in SETTINGS:
            if setting.field:
                name = setting.field
                setting.kind.check(f"GuardConfig.{name}", getattr(self, name))
        if self.health_rtt_degraded > self.health_rtt_unhealthy:
            raise ConfigError(
                "GuardConfig.health_rtt_degraded",
                self.health_rtt_degraded,
                "a value not above health_rtt_unhealthy",
            )

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
