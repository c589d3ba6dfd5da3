"""What the kernel says of a flow with a request waiting on it, and asking the
peer's TCP whether it still answers (a keepalive probe sent now).
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, Callable, NamedTuple, Optional, Tuple

from ._tcpinfo_layout import IS_LINUX, TCP_INFO_OPT

__all__ = ["FlowState", "answer_time", "answers_probe", "read_flow"]

# probes (offset 3) and last_ack_recv (offset 56, ms since the peer's TCP last
# sent anything: every segment it sends carries an ACK).
_ACK_AGE = struct.Struct("=3xB52xI")


class FlowState(NamedTuple):
    """What the in-flight watchdog reads of a waiting request's flow."""

    unacked: int  # our segments the peer has not acknowledged
    probes: int  # keepalive probes sent since the peer last answered
    silent: float  # seconds since the peer's TCP last sent anything
    rtt: float  # seconds
    rttvar: float  # seconds
    #: Retransmission timeouts in a row for the oldest unacknowledged segment
    #: (tcpi_retransmits: back to 0 once it is acknowledged).
    retransmits: int = 0
    #: Seconds since our TCP last sent data, or tried to (a retransmission,
    #: or a probe of a queue that cannot leave).
    sent_ago: float = 0.0
    #: Bytes written but not yet sent.  With nothing unacknowledged, data
    #: stuck here is retried by the probe timer, counted in ``probes``: what
    #: a flow whose packets a local firewall drops (conntrack lost) shows.
    notsent: int = 0


# retransmits @2, probes @3, unacked @24, last_data_sent @44,
# last_ack_recv @56, rtt @68, rttvar @72, notsent_bytes @144 (Linux ABI; the
# last field since 4.6, read as 0 from an older kernel's shorter struct).
_FLOW = struct.Struct("=2xBB20xI16xI8xI8xII68xI")


def answer_time(rtt: float, rttvar: float) -> float:
    """How long a live peer's TCP may take to answer a probe or a
    retransmission: twice the RTT plus its variance, bounded both ways."""
    return min(max(2 * (rtt + 4 * rttvar), 0.05), 0.5)


def read_flow(raw: Any) -> Optional[FlowState]:
    """``FlowState`` of an OS-level socket; None off Linux or on error."""
    if not IS_LINUX:
        return None
    try:
        data = raw.getsockopt(socket.IPPROTO_TCP, TCP_INFO_OPT, _FLOW.size)
        retransmits, probes, unacked, sent_ms, silent_ms, rtt, rttvar, notsent = _FLOW.unpack(
            data.ljust(_FLOW.size, b"\0")
        )
    except (OSError, struct.error, AttributeError, TypeError):
        return None
    return FlowState(
        unacked,
        probes,
        silent_ms / 1e3,
        rtt / 1e6,
        rttvar / 1e6,
        retransmits,
        sent_ms / 1e3,
        notsent,
    )


# Kernel timers tick every 1-4 ms (HZ): an ACK younger than the probe by less
# than that cannot be told from one that came just before it.
_TICK = 0.005


def _ack_age(raw: Any) -> Optional[Tuple[int, float]]:
    try:
        probes, age_ms = _ACK_AGE.unpack(
            raw.getsockopt(socket.IPPROTO_TCP, TCP_INFO_OPT, _ACK_AGE.size)
        )
    except (OSError, struct.error, AttributeError):
        return None
    return probes, age_ms / 1e3


def answers_probe(
    raw: Any,
    margin: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Optional[bool]:
    """Does the peer's TCP still answer?  (Linux; None where it cannot be asked.)

    Used when a read timeout fires with nothing of ours unacknowledged: a slow
    server and a black-holed flow then look alike, so one keepalive probe is
    sent and the flow is alive if anything comes back.  Setting ``TCP_KEEPIDLE``
    on a connection already idle that long re-arms the keepalive timer at once
    (``tcp_sock_set_keepidle``), so the probe leaves immediately, or one second
    after the peer's last segment for a shorter timeout.  ``margin`` is how
    long to wait for the answer after that (a few RTTs).  Callers close the
    socket afterwards, so its options are not restored.
    """
    if not IS_LINUX:
        return None
    first = _ack_age(raw)
    if first is None:
        return None
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        start = clock()
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    except (OSError, AttributeError):
        return None
    probe_at = start + max(0.0, 1.0 - first[1])
    deadline = probe_at + margin
    while True:
        now = clock()
        seen = _ack_age(raw)
        if seen is None:
            return None
        if seen[1] + _TICK < now - start:
            return True  # the peer sent something after we asked
        if now >= deadline:
            return False
        sleep(min(0.01, max(0.0, deadline - now)))
