"""Structured log records: one per decision the guard takes.

Every record goes to the ``requests_azguard`` logger and carries the fields
``decision``, ``host``, ``peer``, ``reason`` and ``errno`` as attributes (via
``extra=``), so a JSON formatter or a log pipeline can index them without
parsing the message.

Levels are chosen so that a program that never configured logging stays
silent except for real incidents (Python's last-resort handler prints
WARNING and above):

============================  =========
decision                      level
============================  =========
``blackhole``, ``condemn``,   WARNING   a flow died silently / a peer's pool
``breaker_open``                        was condemned / a host's breaker opened
``retry``, ``error``,         INFO
``fallback``, ``breaker_*``
anything else (``evict``,     DEBUG     routine hygiene, possibly per request
``reuse``, ``fail_fast`` ...)
============================  =========

A caller may pass ``level=`` to override.  ``LoggingInstrumentation`` is an
opt-in instrumentation back-end that logs every raw event at DEBUG to the
child logger ``requests_azguard.events``.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Tuple, Union

__all__ = [
    "DECISION_LEVELS",
    "LoggingInstrumentation",
    "format_peer",
    "log_decision",
    "logger",
]

logger = logging.getLogger("requests_azguard")
_events_logger = logging.getLogger("requests_azguard.events")

DECISION_LEVELS: Mapping[str, int] = {
    "blackhole": logging.WARNING,
    "condemn": logging.WARNING,
    "breaker_open": logging.WARNING,
    "retry": logging.INFO,
    "error": logging.INFO,
    "fallback": logging.INFO,
    "breaker_half_open": logging.INFO,
    "breaker_closed": logging.INFO,
}

# LogRecord's own attribute names: an ``extra`` key equal to one of them makes
# logging raise, which must never happen on a request path.
_RESERVED = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)

Peer = Union[None, str, Tuple[Any, ...]]


def format_peer(peer: Peer) -> Optional[str]:
    """``("10.0.0.1", 443)`` -> ``"10.0.0.1:443"``; IPv6 in brackets."""
    if peer is None or isinstance(peer, str):
        return peer
    try:
        host, port = peer[0], peer[1]
    except (IndexError, TypeError):
        return str(peer)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def log_decision(
    decision: str,
    *,
    host: str,
    reason: Optional[str] = None,
    peer: Peer = None,
    errno: Optional[str] = None,
    level: Optional[int] = None,
    **fields: Any,
) -> None:
    """Log one decision of the guard as one structured record.

    :param decision: what was decided, e.g. ``"evict"``, ``"retry"``,
        ``"blackhole"``, ``"condemn"``, ``"breaker_open"``, ``"fallback"``.
    :param host: ``scheme://host:port``.
    :param reason: why (``"idle"``, ``"peer_closed"``, ``"ECONNRESET"`` ...).
    :param peer: the peer address, as ``getpeername()`` returns it or a string.
    :param errno: the errno name behind the decision, if any.
    :param level: overrides the level of ``DECISION_LEVELS`` (DEBUG if absent).
    :param fields: more structured fields; a name that collides with a
        ``LogRecord`` attribute is prefixed with ``azguard_``.
    """
    if level is None:
        level = DECISION_LEVELS.get(decision, logging.DEBUG)
    if not logger.isEnabledFor(level):
        return
    shown_peer = format_peer(peer)
    extra: Dict[str, Any] = {
        "decision": decision,
        "host": host,
        "peer": shown_peer,
        "reason": reason,
        "errno": errno,
    }
    for key, value in fields.items():
        extra[f"azguard_{key}" if key in _RESERVED or key in extra else key] = value
    parts = [decision, host]
    if shown_peer:
        parts.append(f"peer={shown_peer}")
    if reason:
        parts.append(f"reason={reason}")
    if errno:
        parts.append(f"errno={errno}")
    parts.extend(f"{k}={v}" for k, v in fields.items())
    logger.log(level, "azguard %s", " ".join(parts), extra=extra)


class LoggingInstrumentation:
    """Instrumentation back-end that logs every event (default DEBUG) to
    ``requests_azguard.events`` with ``event`` and ``host`` fields."""

    def __init__(self, level: int = logging.DEBUG, log: Optional[logging.Logger] = None) -> None:
        self._level = level
        self._log = log or _events_logger

    def _event(self, event: str, host: str, **fields: Any) -> None:
        if not self._log.isEnabledFor(self._level):
            return
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        extra = {"event": event, "host": host}
        extra.update({k if k not in _RESERVED else f"azguard_{k}": v for k, v in fields.items()})
        self._log.log(self._level, "azguard event %s %s %s", event, host, detail, extra=extra)

    def connection_opened(self, host: str, connect_seconds: float) -> None:
        self._event("connection_opened", host, connect_seconds=connect_seconds)

    def connection_reused(self, host: str) -> None:
        self._event("connection_reused", host)

    def connection_evicted(self, host: str, reason: str) -> None:
        self._event("connection_evicted", host, reason=reason)

    def error(self, host: str, errno_name: str) -> None:
        self._event("error", host, errno=errno_name)

    def retry(self, host: str, reason: str) -> None:
        self._event("retry", host, reason=reason)

    def blackhole(self, host: str) -> None:
        self._event("blackhole", host)

    def condemned(self, host: str, connections: int) -> None:
        self._event("condemned", host, connections=connections)

    def breaker_transition(self, host: str, old: str, new: str) -> None:
        self._event("breaker_transition", host, old=old, new=new)

    def fallback_served(self, host: str) -> None:
        self._event("fallback_served", host)

    def tcp_info(self, host: str, rtt_seconds: float, grade: str) -> None:
        self._event("tcp_info", host, rtt_seconds=rtt_seconds, grade=grade)
