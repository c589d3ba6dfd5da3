"""Validation before reuse: should this idle pooled connection carry a request?

``reuse_verdict`` is a pure predicate over facts gathered from the socket
(``ReuseFacts``), the time and the config: it returns the eviction reason, or
None to reuse.  Gathering the facts (``gather``) is the only I/O: one poll for
readability (replacing urllib3's own, not adding a second), a cached DNS
lookup when rechecks are on, and, for a connection idle longer than
``DEEP_CHECK_AFTER``, one ``getsockopt(TCP_INFO)`` and one ``getpeername()``.
Closing is left to the caller.
"""

from __future__ import annotations

from typing import Any, Final, FrozenSet, NamedTuple, Optional, Tuple

from ._condemn import condemned_at
from ._config import GuardConfig
from ._dns import default_cache
from ._tcpinfo import ESTABLISHED, TcpVitals, raw_socket, read_vitals

__all__ = [
    "DEEP_CHECK_AFTER",
    "REASONS",
    "Peer",
    "ReuseFacts",
    "gather",
    "peer_of",
    "quiet_window",
    "reuse_verdict",
]

#: Idle seconds after which reuse also asks the kernel (TCP_INFO, peer
#: address) and DNS: Linux's minimum RTO, the earliest a retransmission or an
#: unanswered probe can exist.
DEEP_CHECK_AFTER: Final = 0.2

#: Every eviction reason, for metrics and docs.
REASONS: Final = (
    "peer_closed",  # FIN, RST or stray bytes pending on an idle connection
    "max_idle",
    "max_age",
    "tcp_state",  # TCP_INFO state is not ESTABLISHED
    "keepalive_unanswered",  # keepalive probes out and unanswered
    "unacked",  # data unacknowledged on a connection that should be quiet
    "peer_changed",  # getpeername() differs from connect time, or fails
    "condemned",  # a younger sibling to the same peer was judged dead
    "dns_drift",  # the host's current DNS answer no longer has this peer
)


class ReuseFacts(NamedTuple):
    opened_at: float
    idle_since: Optional[float]
    readable: bool  # the idle socket has something to read: EOF, RST or junk
    tcp: Optional[TcpVitals]  # None off Linux
    peer_at_connect: Optional[Peer]
    peer_now: Optional[Peer]
    condemned_at: Optional[float]
    dns_addresses: Optional[FrozenSet[str]]  # None: not checked


def reuse_verdict(facts: ReuseFacts, now: float, config: GuardConfig) -> Optional[str]:
    """The reason not to reuse the connection, or None."""
    # One unpacking instead of a dozen field lookups: this runs before every reuse.
    opened_at, idle_since, readable, tcp, peer_at_connect, peer_now, condemned, dns = facts
    if readable:
        return "peer_closed"
    if tcp is not None:
        if tcp.state != ESTABLISHED:
            return "tcp_state"
        if tcp.probes > 0:
            return "keepalive_unanswered"
        if tcp.unacked > 0:
            return "unacked"
    if (
        peer_now is not peer_at_connect
        and peer_at_connect is not None
        and peer_now != peer_at_connect
    ):
        return "peer_changed"
    if condemned is not None and opened_at <= condemned:
        return "condemned"
    if config.max_age is not None and now - opened_at > config.max_age:
        return "max_age"
    if (
        config.max_idle is not None
        and idle_since is not None
        and now - idle_since > config.max_idle
    ):
        return "max_idle"
    if dns is not None and peer_at_connect is not None and str(peer_at_connect[0]) not in dns:
        return "dns_drift"
    return None


def quiet_window(config: GuardConfig) -> float:
    """Seconds after a connection goes back to the pool during which nothing
    but its socket's readability and a condemnation can make ``reuse_verdict``
    refuse it, given that it is younger than ``max_age``.

    Inside it ``gather`` asks the kernel nothing (``DEEP_CHECK_AFTER``) and
    ``max_idle`` cannot have passed.  With DNS rechecks on, an answer can
    drift at any moment: the window is empty and every reuse takes the whole
    check.  The connection uses it to skip gathering the facts a busy pool
    would gather for nothing (``_connection.GuardedConnection.is_connected``;
    tests check that the shortcut agrees with the verdict).
    """
    if config.dns_recheck is not None:
        return 0.0
    if config.max_idle is not None:
        return min(DEEP_CHECK_AFTER, config.max_idle)
    return DEEP_CHECK_AFTER


Peer = Tuple[Any, ...]


def peer_of(sock: Any) -> Optional[Peer]:
    """``getpeername()`` of the TCP socket under ``sock``, or None if gone."""
    try:
        return tuple(raw_socket(sock).getpeername())
    except (OSError, AttributeError, ValueError):
        return None


def gather(
    conn: Any,
    now: float,
    config: GuardConfig,
    poll: bool = True,
    dns_target: Optional[Tuple[str, int]] = None,
) -> ReuseFacts:
    """Read the facts from a pooled connection's live socket.

    ``poll=False`` when urllib3 1.26 already polled for readability.
    ``dns_target`` is the (host, port) that was resolved to reach the peer
    (the proxy's behind a proxy); None skips the DNS check.
    """
    sock = conn.sock
    raw = conn.azguard_raw
    if raw is None:
        raw = raw_socket(sock)
    readable = False
    if poll:
        # SSL may hold decrypted bytes the kernel no longer shows.
        pending = getattr(sock, "pending", None)
        readable = bool(pending and pending()) or conn.azguard_readable(raw)
    peer_at_connect = conn.azguard_peer
    dns = None
    if config.dns_recheck is not None and dns_target is not None:
        # Cached: a lookup happens at most once per interval per host, and
        # busy pools (never idle long) are the ones a moved service hurts most.
        dns = default_cache.addresses(dns_target[0], dns_target[1], now, config.dns_recheck)
    idle_since = conn.azguard_idle_since
    tcp: Optional[TcpVitals] = None
    peer_now = peer_at_connect
    if idle_since is None or now - idle_since >= DEEP_CHECK_AFTER:
        # Sooner than one minimum RTO after its last response, which proved
        # the flow alive, no probe or retransmission can have failed and a
        # FIN or RST shows in the poll above: skipping the kernel queries then
        # is what keeps a busy pool at plain speed.
        tcp = read_vitals(raw)
        peer_now = peer_of(raw)
    opened_at = conn.azguard_opened_at
    # Positional: a NamedTuple built from keywords costs twice as much, and
    # this runs before every reuse.
    return ReuseFacts(
        now if opened_at is None else opened_at,
        idle_since,
        readable,
        tcp,
        peer_at_connect,
        peer_now,
        None if peer_at_connect is None else condemned_at(peer_at_connect),
        dns,
    )
