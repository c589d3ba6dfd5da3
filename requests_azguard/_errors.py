"""The error hierarchy.

``AzGuardError`` is the one base.  Errors a caller sees from a request are also
``requests`` exceptions, so code written as ``except requests.ConnectionError``
keeps working when the adapter is mounted.
"""

from __future__ import annotations

from typing import Any, Optional

import requests

__all__ = [
    "AzGuardError",
    "BlackHoleError",
    "CircuitOpenError",
    "ConfigError",
    "ProxyCircuitOpenError",
    "UnknownVariableWarning",
]


class AzGuardError(Exception):
    """Base class of every error raised by requests-azguard."""


class ConfigError(AzGuardError, ValueError):
    """A configuration value is invalid.

    The message names the setting (an ``AZGUARD_*`` variable or a
    ``GuardConfig`` field), the offending value and what is accepted.
    """

    def __init__(self, name: str, value: object, accepted: str) -> None:
        self.name = name
        self.value = value
        self.accepted = accepted
        super().__init__(f"{name}={value!r} is invalid: expected {accepted}")


class UnknownVariableWarning(UserWarning):
    """An ``AZGUARD_*`` environment variable that is not a setting (a typo?).

    The variable is ignored; the message names the closest known variable.
    Silence it with ``warnings.filterwarnings("ignore",
    category=requests_azguard.UnknownVariableWarning)``.
    """


class CircuitOpenError(AzGuardError, requests.exceptions.ConnectionError):
    """The circuit breaker for a host is open; no socket was touched."""

    def __init__(self, host: str, retry_at: Optional[float], *args: Any, **kwargs: Any) -> None:
        self.host = host
        #: ``time.time()`` at which the breaker admits its next trial request.
        self.retry_at = retry_at
        message = args[0] if args else f"circuit breaker open for {host}"
        super().__init__(message, *args[1:], **kwargs)


class BlackHoleError(
    AzGuardError, requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout
):
    """A flow was judged black-holed (the peer's TCP stopped answering) and the
    request could not be replayed safely.

    Plain requests reports the same flow, later, as ``ReadTimeout`` (its read
    timeout fired) or ``ConnectionError`` (the kernel gave up first), so this
    is both, like requests' ``ConnectTimeout`` is both a ``ConnectionError``
    and a ``Timeout``: every ``except`` written for plain requests catches it."""


class ProxyCircuitOpenError(CircuitOpenError, requests.exceptions.ProxyError):
    """The circuit breaker of the *proxy* a request goes through is open:
    failures to reach or tunnel through a proxy count against the proxy's
    ``scheme://host:port``, never the target's.  Both a ``CircuitOpenError``
    and a ``requests.exceptions.ProxyError``, which plain requests raises
    for a proxy it cannot use."""
