"""Linux ``TCP_INFO``: the layout of ``struct tcp_info``, its parser, and one read.

``read_tcp_info(sock)`` is one ``getsockopt`` plus one precompiled
``struct`` unpack.  Parsing is pure (``parse_tcp_info(bytes)``) so it is
tested on buffers built by hand as well as on live sockets.

Layout: ``struct tcp_info`` of include/uapi/linux/tcp.h.  The kernel copies
``min(len, sizeof(struct tcp_info))`` bytes, so an older kernel returns a
shorter buffer; fields it did not fill are ``None`` here (the 104-byte base,
present since Linux 2.6, is required).  Times are converted to seconds.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Any, Dict, NamedTuple, Optional, Tuple

__all__ = [
    "BASE_SIZE",
    "CLOSE",
    "CLOSE_WAIT",
    "ESTABLISHED",
    "FULL_SIZE",
    "IS_LINUX",
    "TCP_INFO_OPT",
    "TCP_STATES",
    "TcpInfo",
    "parse_tcp_info",
    "raw_socket",
    "read_tcp_info",
    "state_name",
]

IS_LINUX = sys.platform.startswith("linux")
# socket.TCP_INFO is missing on some builds; the value is fixed by the Linux ABI.
TCP_INFO_OPT: int = getattr(socket, "TCP_INFO", 11)

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
