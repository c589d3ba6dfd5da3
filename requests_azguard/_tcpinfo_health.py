"""Grading a connection from ``TCP_INFO``: the few fields the reuse check reads,
the base retransmission timeout, and ``healthy``/``degraded``/``unhealthy``.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

from ._tcpinfo_layout import ESTABLISHED, IS_LINUX, TCP_INFO_OPT, TcpInfo

if TYPE_CHECKING:
    from ._config import GuardConfig

__all__ = [
    "DEGRADED",
    "HEALTHY",
    "UNHEALTHY",
    "TcpVitals",
    "base_rto",
    "grade",
    "read_vitals",
]

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"

# Kernel constants behind the base RTO (include/net/tcp.h).
TCP_RTO_MIN = 0.2
TCP_RTO_MAX = 120.0
TCP_TIMEOUT_INIT = 1.0


class TcpVitals(NamedTuple):
    """The few ``TCP_INFO`` fields the reuse check needs, read on every reuse.

    Unpacking the whole struct costs several microseconds more; this reads
    the first 76 bytes (state to rttvar) with one precompiled ``Struct``.
    """

    state: int
    retransmits: int
    probes: int
    unacked: int
    rtt: float  # seconds
    rttvar: float  # seconds


# state, (ca_state), retransmits, probes, (backoff..rcv_mss), unacked,
# (sacked..rcv_ssthresh), rtt, rttvar: offsets fixed by the Linux ABI.
_VITALS = struct.Struct("=BxBB20xI40xII")


def read_vitals(raw: Any) -> Optional[TcpVitals]:
    """``TcpVitals`` of an OS-level socket (see ``raw_socket``); None on error."""
    if not IS_LINUX:
        return None
    try:
        state, retransmits, probes, unacked, rtt, rttvar = _VITALS.unpack(
            raw.getsockopt(socket.IPPROTO_TCP, TCP_INFO_OPT, _VITALS.size)
        )
    except (OSError, struct.error, AttributeError):
        return None
    return TcpVitals(state, retransmits, probes, unacked, rtt / 1e6, rttvar / 1e6)


def base_rto(info: Union[TcpInfo, TcpVitals]) -> float:
    """The connection's base retransmission timeout, in seconds.

    Computed like the kernel's ``__tcp_set_rto``: ``srtt + max(4 * rttvar,
    TCP_RTO_MIN)``, clamped to [200 ms, 120 s].  ``tcpi_rto`` is not used
    because it doubles with each backoff while a flow is black-holed; this is
    the value it started from.  Before any RTT sample the kernel uses 1 s.
    """
    if info.rtt <= 0:
        return TCP_TIMEOUT_INIT
    rto = info.rtt + max(4 * info.rttvar, TCP_RTO_MIN)
    return min(max(rto, TCP_RTO_MIN), TCP_RTO_MAX)


def grade(info: Union[TcpInfo, TcpVitals], config: GuardConfig) -> str:
    """``"healthy"``, ``"degraded"`` or ``"unhealthy"``.

    The rule, first match wins:

    * **unhealthy** if the state is not ESTABLISHED, or the smoothed rtt exceeds
      ``config.health_rtt_unhealthy``, or the stall count exceeds
      ``config.health_retrans_unhealthy``;
    * **degraded** if the rtt exceeds ``config.health_rtt_degraded`` or the
      stall count exceeds ``config.health_retrans_degraded``;
    * otherwise **healthy**.

    The stall count is ``max(retransmits, probes)``: consecutive timeouts of the
    oldest unacknowledged segment, or unanswered keepalive / zero-window
    probes.  Both reset once the peer answers, so they describe the flow now,
    unlike ``total_retrans`` which only grows.
    """
    stalls = max(info.retransmits, info.probes)
    if (
        info.state != ESTABLISHED
        or info.rtt > config.health_rtt_unhealthy
        or stalls > config.health_retrans_unhealthy
    ):
        return UNHEALTHY
    if info.rtt > config.health_rtt_degraded or stalls > config.health_retrans_degraded:
        return DEGRADED
    return HEALTHY
