"""Linux ``TCP_INFO``: read the kernel's view of one connection, and grade it.

``read_tcp_info(sock)`` is one ``getsockopt`` plus one precompiled
``struct`` unpack, cheap enough to run before every reuse of a pooled
connection.  Parsing is pure (``parse_tcp_info(bytes)``) so it is tested on
buffers built by hand as well as on live sockets.

Layout: ``struct tcp_info`` of include/uapi/linux/tcp.h.  The kernel copies
``min(len, sizeof(struct tcp_info))`` bytes, so an older kernel returns a
shorter buffer; fields it did not fill are ``None`` here (the 104-byte base,
present since Linux 2.6, is required).  Times are converted to seconds.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

if TYPE_CHECKING:
    from ._config import GuardConfig

__all__ = [
    "BASE_SIZE",
    "CLOSE",
    "CLOSE_WAIT",
    "DEGRADED",
    "ESTABLISHED",
    "HEALTHY",
    "TCP_STATES",
    "UNHEALTHY",
    "FlowState",
    "TcpInfo",
    "TcpVitals",
    "answers_probe",
    "base_rto",
    "grade",
    "parse_tcp_info",
    "raw_socket",
    "read_flow",
    "read_tcp_info",
    "read_vitals",
    "state_name",
]

IS_LINUX = sys.platform.startswith("linux")
# socket.TCP_INFO is missing on some builds; the value is fixed by the Linux ABI.
TCP_INFO_OPT: int = getattr(socket, "TCP_INFO", 11)

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"

# include/net/tcp_states.h
TCP_STATES: Dict[int, str] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}
ESTABLISHED = 1
CLOSE_WAIT = 8
CLOSE = 7

# Kernel constants behind the base RTO (include/net/tcp.h).
TCP_RTO_MIN = 0.2
TCP_RTO_MAX = 120.0
TCP_TIMEOUT_INIT = 1.0


def state_name(state: int) -> str:
    return TCP_STATES.get(state, f"UNKNOWN({state})")


# (name, struct code, scale to seconds or None).  The order is the kernel's.
# The bitfield byte holding snd/rcv window scales is kept raw as ``wscale``;
# the byte after it (app-limited / fastopen flags) is skipped.
_BASE: Tuple[Tuple[str, str, Optional[float]], ...] = (
    ("state", "B", None),
    ("ca_state", "B", None),
    ("retransmits", "B", None),
    ("probes", "B", None),
    ("backoff", "B", None),
    ("options", "B", None),
    ("wscale", "B", None),
    ("", "x", None),
    ("rto", "I", 1e-6),
    ("ato", "I", 1e-6),
    ("snd_mss", "I", None),
    ("rcv_mss", "I", None),
    ("unacked", "I", None),
    ("sacked", "I", None),
    ("lost", "I", None),
    ("retrans", "I", None),
    ("fackets", "I", None),
    ("last_data_sent", "I", 1e-3),
    ("last_ack_sent", "I", 1e-3),
    ("last_data_recv", "I", 1e-3),
    ("last_ack_recv", "I", 1e-3),
    ("pmtu", "I", None),
    ("rcv_ssthresh", "I", None),
    ("rtt", "I", 1e-6),
    ("rttvar", "I", 1e-6),
    ("snd_ssthresh", "I", None),
    ("snd_cwnd", "I", None),
    ("advmss", "I", None),
    ("reordering", "I", None),
    ("rcv_rtt", "I", 1e-6),
    ("rcv_space", "I", None),
    ("total_retrans", "I", None),
)
# Appended by later kernels (3.15 .. 6.x); each is Optional.
_EXTENDED: Tuple[Tuple[str, str, Optional[float]], ...] = (
    ("pacing_rate", "Q", None),
    ("max_pacing_rate", "Q", None),
    ("bytes_acked", "Q", None),
    ("bytes_received", "Q", None),
    ("segs_out", "I", None),
    ("segs_in", "I", None),
    ("notsent_bytes", "I", None),
    ("min_rtt", "I", 1e-6),
    ("data_segs_in", "I", None),
    ("data_segs_out", "I", None),
    ("delivery_rate", "Q", None),
    ("busy_time", "Q", 1e-6),
    ("rwnd_limited", "Q", 1e-6),
    ("sndbuf_limited", "Q", 1e-6),
    ("delivered", "I", None),
    ("delivered_ce", "I", None),
    ("bytes_sent", "Q", None),
    ("bytes_retrans", "Q", None),
    ("dsack_dups", "I", None),
    ("reord_seen", "I", None),
    ("rcv_ooopack", "I", None),
    ("snd_wnd", "I", None),
    ("rcv_wnd", "I", None),
    ("rehash", "I", None),
    ("total_rto", "H", None),
    ("total_rto_recoveries", "H", None),
    ("total_rto_time", "I", 1e-3),
)

# Native byte order, explicit sizes, no implicit padding: the kernel struct has
# none because every u64 already sits at an 8-byte offset.
_FULL = struct.Struct("=" + "".join(code for _, code, _ in _BASE + _EXTENDED))
_BASE_STRUCT = struct.Struct("=" + "".join(code for _, code, _ in _BASE))
BASE_SIZE: int = _BASE_STRUCT.size  # 104
FULL_SIZE: int = _FULL.size  # 248


def _ends() -> Tuple[Tuple[int, int], ...]:
    """(end offset in bytes, number of values unpacked) for each extended field."""
    out = []
    offset, count = BASE_SIZE, len([f for f in _BASE if f[1] != "x"])
    for _, code, _ in _EXTENDED:
        offset += struct.calcsize("=" + code)
        count += 1
        out.append((offset, count))
    return tuple(out)


_EXT_ENDS = _ends()
_FIELDS = tuple(n for n, code, _ in _BASE + _EXTENDED if code != "x")
_SCALED = tuple(
    (i, scale)
    for i, (_, scale) in enumerate((n, s) for n, code, s in _BASE + _EXTENDED if code != "x")
    if scale is not None
)
_N_BASE = len([f for f in _BASE if f[1] != "x"])


class TcpInfo(NamedTuple):
    """One snapshot of ``struct tcp_info``.  Durations in seconds."""

    state: int
    ca_state: int
    retransmits: int  # consecutive RTO retransmissions of the oldest unacked segment
    probes: int  # unanswered zero-window / keepalive probes
    backoff: int
    options: int
    wscale: int  # raw bitfield byte; see snd_wscale / rcv_wscale
    rto: float  # current RTO: doubles with each backoff, see base_rto()
    ato: float
    snd_mss: int
    rcv_mss: int
    unacked: int  # segments sent and not yet acknowledged
    sacked: int
    lost: int
    retrans: int
    fackets: int
    last_data_sent: float  # seconds since
    last_ack_sent: float  # never filled by the kernel
    last_data_recv: float
    last_ack_recv: float
    pmtu: int
    rcv_ssthresh: int
    rtt: float  # smoothed RTT
    rttvar: float
    snd_ssthresh: int
    snd_cwnd: int
    advmss: int
    reordering: int
    rcv_rtt: float
    rcv_space: int
    total_retrans: int
    pacing_rate: Optional[int] = None
    max_pacing_rate: Optional[int] = None
    bytes_acked: Optional[int] = None
    bytes_received: Optional[int] = None
    segs_out: Optional[int] = None
    segs_in: Optional[int] = None
    notsent_bytes: Optional[int] = None
    min_rtt: Optional[float] = None
    data_segs_in: Optional[int] = None
    data_segs_out: Optional[int] = None
    delivery_rate: Optional[int] = None
    busy_time: Optional[float] = None
    rwnd_limited: Optional[float] = None
    sndbuf_limited: Optional[float] = None
    delivered: Optional[int] = None
    delivered_ce: Optional[int] = None
    bytes_sent: Optional[int] = None
    bytes_retrans: Optional[int] = None
    dsack_dups: Optional[int] = None
    reord_seen: Optional[int] = None
    rcv_ooopack: Optional[int] = None
    snd_wnd: Optional[int] = None
    rcv_wnd: Optional[int] = None
    rehash: Optional[int] = None
    total_rto: Optional[int] = None
    total_rto_recoveries: Optional[int] = None
    total_rto_time: Optional[float] = None

    @property
    def state_name(self) -> str:
        return state_name(self.state)

    @property
    def snd_wscale(self) -> int:
        # GCC allocates bitfields from the least significant bit on
        # little-endian targets and from the most significant on big-endian.
        return self.wscale & 0x0F if sys.byteorder == "little" else self.wscale >> 4

    @property
    def rcv_wscale(self) -> int:
        return self.wscale >> 4 if sys.byteorder == "little" else self.wscale & 0x0F

    def as_dict(self) -> Dict[str, Any]:
        """Every field plus ``state_name``, for JSON output."""
        out: Dict[str, Any] = self._asdict()
        out["state_name"] = self.state_name
        return out


assert TcpInfo._fields == _FIELDS, "TcpInfo fields drifted from the struct layout"


def parse_tcp_info(raw: bytes) -> TcpInfo:
    """Parse a ``TCP_INFO`` buffer; fields past its end are ``None``.

    Raises ``ValueError`` for a buffer shorter than the 104-byte base.
    """
    size = len(raw)
    if size >= FULL_SIZE:
        values = list(_FULL.unpack_from(raw))
    elif size >= BASE_SIZE:
        # Unpack zero-padded, then blank whatever the kernel did not write.
        values = list(_FULL.unpack(bytes(raw) + bytes(FULL_SIZE - size)))
        keep = _N_BASE
        for end, count in _EXT_ENDS:
            if end > size:
                break
            keep = count
        values[keep:] = [None] * (len(values) - keep)
    else:
        raise ValueError(f"TCP_INFO buffer of {size} bytes; at least {BASE_SIZE} are needed")
    for i, scale in _SCALED:
        v = values[i]
        if v is not None:
            values[i] = v * scale
    return TcpInfo._make(values)


def raw_socket(sock: Any) -> Any:
    """The OS-level socket under TLS wrappers (``ssl.SSLSocket`` already is one;
    urllib3's ``SSLTransport`` and pyOpenSSL's ``WrappedSocket`` hold it as
    ``.socket``)."""
    for _ in range(4):  # TLS-in-TLS nests at most a couple of levels
        if isinstance(sock, socket.socket):
            return sock
        inner = getattr(sock, "socket", None)
        if inner is None:
            return sock
        sock = inner
    return sock


def read_tcp_info(sock: Any) -> Optional[TcpInfo]:
    """The kernel's ``TCP_INFO`` for ``sock``; ``None`` off Linux, for a
    non-TCP or closed socket, or on any error."""
    if not IS_LINUX or sock is None:
        return None
    try:
        raw = raw_socket(sock).getsockopt(socket.IPPROTO_TCP, TCP_INFO_OPT, FULL_SIZE)
        return parse_tcp_info(raw)
    except (OSError, ValueError, AttributeError, TypeError):
        return None


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
