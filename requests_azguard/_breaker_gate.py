"""The circuit breaker's gate around a request, used by the adapter and the SDK pools.

Before the request the breaker is asked (``admit``): open, the request fails
in microseconds without touching a socket, with :class:`CircuitOpenError`
(:class:`ProxyCircuitOpenError` for a proxy's breaker) or the configured
fallback.  After it the outcome is recorded against whom its evidence blames
(``_failure``): the host, the proxy, or nobody for a dead flow.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Final, Optional, Tuple

import requests
from urllib3 import exceptions as u3

from ._breaker import HostBreaker
from ._errors import CircuitOpenError, ConfigError, ProxyCircuitOpenError
from ._failure import failure_of, unattached
from ._instrument import hooks
from ._policy import HOST, NOBODY, PROXY

if TYPE_CHECKING:
    from ._config import GuardConfig

__all__ = ["fresh_connection", "guarded_send", "record_exception"]

_log = logging.getLogger("requests_azguard.breaker")

# Exceptions that can be about the host.  requests' and urllib3's invalid-input
# errors (bad URL, bad header, missing schema) are ValueErrors: they never
# reach the network and say nothing about the host.
_HOST_ERRORS: Final = (OSError, requests.RequestException, u3.HTTPError)


def record_exception(
    breaker: HostBreaker,
    ticket: int,
    exc: BaseException,
    now: float,
    proxy: Optional[HostBreaker] = None,
    proxy_ticket: int = 0,
) -> None:
    """Count a failed request against whom its evidence blames (see _failure)."""
    if isinstance(exc, ValueError) or not isinstance(exc, _HOST_ERRORS):
        blame, timeout = NOBODY, False
    else:
        failure = failure_of(exc) or unattached(exc)
        blame, timeout = failure.blame, failure.decision.timeout
    if blame == HOST:
        breaker.record_failure(ticket, now, timeout=timeout)
    else:
        breaker.record_neutral(ticket, now)
    if proxy is not None:
        if blame == PROXY:
            proxy.record_failure(proxy_ticket, now, timeout=timeout)
        else:
            proxy.record_neutral(proxy_ticket, now)


def fresh_connection(raw: Any) -> bool:
    """Did urllib3's response ``raw`` come on a connection opened for it
    (see ``_connection.getresponse``)?"""
    fresh = getattr(raw, "azguard_fresh", None)
    if fresh is None:  # urllib3 1.26: on the http.client response it wraps
        fresh = getattr(getattr(raw, "_original_response", None), "azguard_fresh", False)
    return bool(fresh)


def _open_circuit(
    breaker: HostBreaker,
    err: CircuitOpenError,
    request: requests.PreparedRequest,
    config: GuardConfig,
    fallback: Optional[Callable[[requests.PreparedRequest, Exception], requests.Response]],
    connection: Any,
    now: float,
) -> requests.Response:
    """The answer while ``breaker`` is open: the fallback's, a synthetic one, or ``err``."""
    err.request = request
    if fallback is not None:
        # Called inside this handler so that an error it raises carries
        # the breaker's error as __context__.
        response = fallback(request, err)
        if not isinstance(response, requests.Response):
            raise ConfigError("fallback return value", response, "a requests.Response") from err
    elif config.fallback_status is not None:
        from ._fallback import synthetic_response

        response = synthetic_response(request, config.fallback_status, err, now, connection)
    else:
        raise err
    try:
        hooks().fallback_served(breaker.key)
    except Exception:  # a metrics back-end must not break requests
        _log.exception("instrumentation failed on fallback_served")
    return response


def guarded_send(
    breaker: HostBreaker,
    request: requests.PreparedRequest,
    config: GuardConfig,
    transport: Callable[..., requests.Response],
    args: Tuple[Any, ...],
    fallback: Optional[Callable[[requests.PreparedRequest, Exception], requests.Response]],
    connection: Any,
    proxy: Optional[HostBreaker] = None,
) -> requests.Response:
    """Run ``transport(*args)`` behind ``breaker`` (see ``_breaker_registry.BreakerLookup``), and
    behind ``proxy``, the breaker of the proxy the request goes through.

    Open breaker: ``fallback(request, error)`` if given, else a synthetic
    ``config.fallback_status`` response, else :class:`CircuitOpenError`
    (:class:`ProxyCircuitOpenError` for the proxy's).  The outcome counts
    against whom its evidence blames: the host, the proxy, or nobody.
    """
    clock = breaker.clock
    proxy_ticket = 0
    if proxy is not None:
        try:
            proxy_ticket = proxy.admit(clock())
        except CircuitOpenError as err:
            proxy_err = ProxyCircuitOpenError(err.host, err.retry_at)
            return _open_circuit(proxy, proxy_err, request, config, fallback, connection, clock())
    try:
        ticket = breaker.admit(clock())
    except CircuitOpenError as err:
        if proxy is not None:
            proxy.record_neutral(proxy_ticket, clock())
        return _open_circuit(breaker, err, request, config, fallback, connection, clock())
    try:
        response = transport(*args)
    except BaseException as exc:
        record_exception(breaker, ticket, exc, clock(), proxy, proxy_ticket)
        raise
    if response.status_code in config.breaker_statuses:
        breaker.record_failure(ticket, clock())
    elif ticket or not breaker.calm:
        # Only a breaker that is not closed cares whether the connection was
        # fresh (see record_success): asked then, not on every request.
        breaker.record_success(
            ticket, clock(), not breaker.closed and fresh_connection(response.raw)
        )
    if proxy is not None:
        # The proxy carried the request there and back: it works.
        proxy.record_success(proxy_ticket, clock())
    return response
