"""Reading the ``AZGUARD_*`` environment against the configuration's spec.

The environment is read only when asked (``describe_env``, and through it
``GuardConfig.from_env()``), never at import, and an explicit mapping can
stand in for ``os.environ``.  A bad value raises ``ConfigError`` naming the
variable, the value and what is accepted; nothing falls back to a default.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Final, List, Mapping, NamedTuple, Optional, Tuple

from ._config_spec import ENV_SETTINGS, ENV_VARS

__all__ = ["EnvValue", "describe_env", "unknown_env_messages", "unknown_env_vars"]

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
    result = []
    for setting in ENV_SETTINGS:
        raw = env.get(setting.variable)
        if raw is None or raw.strip() == "":
            result.append(
                EnvValue(setting.variable, setting.field, setting.default, "default", None)
            )
            continue
        value = setting.kind.parse(setting.variable, raw)
        shown = setting.kind.echo(raw)
        result.append(EnvValue(setting.variable, setting.field, value, setting.variable, shown))
    return result
