"""requests-azguard: keep requests working when the network under a pooled
keep-alive connection changes without telling anyone.

The front door is small: ``mount()``, ``AzGuardAdapter``, ``GuardConfig``,
``install()``/``uninstall()`` and the errors; for urllib3 users (and SDKs),
the guarded ``PoolManager``/``ProxyManager``/``proxy_from_url``.  Importing the package has no
side effects: the environment is read only when a config is built.
"""

from __future__ import annotations

from ._adapter import AzGuardAdapter, Fallback, mount
from ._breaker_registry import BreakerKey, breaker_key, reset_breakers
from ._config import GuardConfig
from ._errors import (
    AzGuardError,
    BlackHoleError,
    CircuitOpenError,
    ConfigError,
    ProxyCircuitOpenError,
    UnknownVariableWarning,
)
from ._fallback import fallback_response
from ._install import Installation, InstallConflictError, install, is_installed, uninstall
from ._instrument import (
    Instrumentation,
    add_instrumentation,
    remove_instrumentation,
)
from ._log import LoggingInstrumentation
from ._otel import OpenTelemetryInstrumentation
from ._policy import DEFAULT_TABLE, Decision, Policy, reset_decisions, set_decision
from ._prometheus import PrometheusInstrumentation
from ._urllib3 import PoolManager, ProxyManager, proxy_from_url
from ._version import __version__ as __version__

# The one list of public names (a test keeps it sorted and complete).
__all__ = [
    "AzGuardAdapter",
    "AzGuardError",
    "BlackHoleError",
    "BreakerKey",
    "CircuitOpenError",
    "ConfigError",
    "DEFAULT_TABLE",
    "Decision",
    "Fallback",
    "GuardConfig",
    "InstallConflictError",
    "Installation",
    "Instrumentation",
    "LoggingInstrumentation",
    "OpenTelemetryInstrumentation",
    "Policy",
    "PoolManager",
    "PrometheusInstrumentation",
    "ProxyCircuitOpenError",
    "ProxyManager",
    "UnknownVariableWarning",
    "add_instrumentation",
    "breaker_key",
    "fallback_response",
    "install",
    "is_installed",
    "mount",
    "proxy_from_url",
    "remove_instrumentation",
    "reset_breakers",
    "reset_decisions",
    "set_decision",
    "uninstall",
]

# Set only by the AZGUARD_AUTO start-up hook when this package was what first
# imported requests: the guard could not be installed then, so it is now.
_pending = globals().pop("_azguard_autostart_pending", None)
if _pending is not None:
    _pending()
del _pending
# ``from __future__ import annotations`` binds a name; it is not part of the API.
del annotations
