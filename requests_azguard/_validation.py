"""Validation before reuse: should this idle pooled connection carry a request?

``reuse_verdict`` is a pure predicate over facts gathered from the socket
(``ReuseFacts``), the time and the config: it returns the eviction reason, or
None to reuse.  Gathering the facts (``gather``) is the only I/O: one poll for
readability (replacing urllib3's own, not adding a second), one
``getsockopt(TCP_INFO)``, one ``getpeername()``, and, when DNS rechecks are on,
a cached lookup.  Closing is left to the caller.
"""

from __future__ import annotations

from typing import Any, Final, FrozenSet, NamedTuple, Optional, Tuple

from urllib3.util.wait import wait_for_read

from ._condemn import condemned_at
from ._config import GuardConfig
from ._dns import default_cache
from ._tcpinfo import ESTABLISHED, TcpInfo, raw_socket, read_tcp_info

__all__ = ["REASONS", "ReuseFacts", "gather", "reuse_verdict"]

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
    tcp: Optional[TcpInfo]  # None off Linux
    peer_at_connect: Optional[Tuple[Any, ...]]
    peer_now: Optional[Tuple[Any, ...]]
    condemned_at: Optional[float]
    dns_addresses: Optional[FrozenSet[str]]  # None: not checked


def reuse_verdict(facts: ReuseFacts, now: float, config: GuardConfig) -> Optional[str]:
    """The reason not to reuse the connection, or None."""
    if facts.readable:
        return "peer_closed"
    tcp = facts.tcp
    if tcp is not None:
        if tcp.state != ESTABLISHED:
            return "tcp_state"
        if tcp.probes > 0:
            return "keepalive_unanswered"
        if tcp.unacked > 0:
            return "unacked"
    if facts.peer_at_connect is not None and facts.peer_now != facts.peer_at_connect:
        return "peer_changed"
    if facts.condemned_at is not None and facts.opened_at <= facts.condemned_at:
        return "condemned"
    if config.max_age is not None and now - facts.opened_at > config.max_age:
        return "max_age"
    if (
        config.max_idle is not None
        and facts.idle_since is not None
        and now - facts.idle_since > config.max_idle
    ):
        return "max_idle"
    if (
        facts.dns_addresses is not None
        and facts.peer_at_connect is not None
        and str(facts.peer_at_connect[0]) not in facts.dns_addresses
    ):
        return "dns_drift"
    return None


def gather(
    conn: Any,
    now: float,
    config: GuardConfig,
    *,
    poll: bool = True,
    dns_host: Optional[str] = None,
    dns_port: Optional[int] = None,
) -> ReuseFacts:
    """Read the facts from a pooled connection's live socket.

    ``poll=False`` when urllib3 1.26 already polled for readability.
    ``dns_host`` is the name that was resolved to reach the peer (the proxy's
    host behind a proxy); None skips the DNS check.
    """
    sock = conn.sock
    readable = False
    if poll:
        # SSL may hold decrypted bytes the kernel no longer shows.
        pending = getattr(sock, "pending", None)
        readable = bool(pending and pending()) or wait_for_read(sock, timeout=0.0)
    peer_at_connect = conn.azguard_peer
    peer_now: Optional[Tuple[Any, ...]]
    try:
        peer_now = tuple(raw_socket(sock).getpeername())
    except (OSError, AttributeError):
        peer_now = None
    dns = None
    if config.dns_recheck is not None and dns_host is not None and dns_port is not None:
        dns = default_cache.addresses(dns_host, dns_port, now, config.dns_recheck)
    return ReuseFacts(
        opened_at=conn.azguard_opened_at if conn.azguard_opened_at is not None else now,
        idle_since=conn.azguard_idle_since,
        readable=readable,
        tcp=read_tcp_info(sock),
        peer_at_connect=peer_at_connect,
        peer_now=peer_now,
        condemned_at=condemned_at(peer_at_connect) if peer_at_connect is not None else None,
        dns_addresses=dns,
    )
