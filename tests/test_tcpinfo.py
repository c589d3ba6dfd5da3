"""TCP_INFO parsing (pure, on hand-built buffers) and reading (real loopback sockets)."""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
from typing import Iterator, List, Tuple

import pytest

from requests_azguard import GuardConfig
from requests_azguard._tcpinfo import (
    BASE_SIZE,
    FULL_SIZE,
    TcpInfo,
    base_rto,
    grade,
    parse_tcp_info,
    read_flow,
    read_tcp_info,
    state_name,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux")

# The kernel layout written out independently of the module: 8 bytes, 24 u32.
BASE_FMT = "=8B24I"


def base_values(**over: int) -> List[int]:
    names = [
        "state",
        "ca_state",
        "retransmits",
        "probes",
        "backoff",
        "options",
        "wscale",
        "flags",
        "rto",
        "ato",
        "snd_mss",
        "rcv_mss",
        "unacked",
        "sacked",
        "lost",
        "retrans",
        "fackets",
        "last_data_sent",
        "last_ack_sent",
        "last_data_recv",
        "last_ack_recv",
        "pmtu",
        "rcv_ssthresh",
        "rtt",
        "rttvar",
        "snd_ssthresh",
        "snd_cwnd",
        "advmss",
        "reordering",
        "rcv_rtt",
        "rcv_space",
        "total_retrans",
    ]
    # Distinct values so a field read from the wrong offset shows.
    values = dict(zip(names, range(1, len(names) + 1)))
    values.update(state=1, wscale=0x7A, flags=0xFF)
    values.update(over)
    return [values[n] for n in names]


def build(size: int, **over: int) -> bytes:
    raw = struct.pack(BASE_FMT, *base_values(**over))
    # Extended tail: pacing_rate, max_pacing_rate, bytes_acked, bytes_received (u64),
    # segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out (u32),
    # delivery_rate, busy_time, rwnd_limited, sndbuf_limited (u64), delivered,
    # delivered_ce (u32), bytes_sent, bytes_retrans (u64), dsack_dups, reord_seen,
    # rcv_ooopack, snd_wnd, rcv_wnd, rehash (u32), total_rto, total_rto_recoveries
    # (u16), total_rto_time (u32), then fields newer than the module knows.
    raw += struct.pack("=4Q", 1001, 1002, 1003, 1004)
    raw += struct.pack("=6I", 2001, 2002, 2003, 2004, 2005, 2006)
    raw += struct.pack("=4Q", 3001, 3002, 3003, 3004)
    raw += struct.pack("=2I", 4001, 4002)
    raw += struct.pack("=2Q", 5001, 5002)
    raw += struct.pack("=6I", 6001, 6002, 6003, 6004, 6005, 6006)
    raw += struct.pack("=2HI", 7001, 7002, 7003)
    raw += b"\xee" * 64
    return raw[:size]


def test_sizes_match_the_kernel_layout() -> None:
    assert BASE_SIZE == struct.calcsize(BASE_FMT) == 104
    assert FULL_SIZE == 248


def test_parse_full_buffer_with_unit_conversion() -> None:
    info = parse_tcp_info(build(FULL_SIZE, rto=204_000, rtt=1500, rttvar=750, last_data_recv=2500))
    assert info.state == 1 and info.state_name == "ESTABLISHED"
    assert (info.ca_state, info.retransmits, info.probes, info.backoff, info.options) == (
        2,
        3,
        4,
        5,
        6,
    )
    assert info.rto == pytest.approx(0.204)
    assert info.ato == pytest.approx(10e-6)
    assert info.rtt == pytest.approx(0.0015)
    assert info.rttvar == pytest.approx(0.00075)
    assert info.last_data_recv == pytest.approx(2.5)
    assert info.last_data_sent == pytest.approx(18e-3)
    assert info.last_ack_recv == pytest.approx(21e-3)
    assert (info.snd_mss, info.rcv_mss, info.unacked, info.sacked, info.lost) == (
        11,
        12,
        13,
        14,
        15,
    )
    assert (info.retrans, info.snd_cwnd, info.total_retrans) == (16, 27, 32)
    assert (info.pacing_rate, info.bytes_acked, info.bytes_received) == (1001, 1003, 1004)
    assert (info.segs_out, info.notsent_bytes, info.data_segs_out) == (2001, 2003, 2006)
    assert info.min_rtt == pytest.approx(2004e-6)
    assert info.busy_time == pytest.approx(3002e-6)
    assert (info.delivered, info.delivered_ce, info.bytes_sent, info.bytes_retrans) == (
        4001,
        4002,
        5001,
        5002,
    )
    assert (info.snd_wnd, info.rcv_wnd, info.rehash) == (6004, 6005, 6006)
    assert (info.total_rto, info.total_rto_recoveries) == (7001, 7002)
    assert info.total_rto_time == pytest.approx(7.003)
    # 0x7A: the low nibble is the send scale on little-endian builds.
    scales = {info.snd_wscale, info.rcv_wscale}
    assert scales == {0xA, 0x7}


def test_longer_buffer_from_a_newer_kernel_is_accepted() -> None:
    assert parse_tcp_info(build(FULL_SIZE + 64)) == parse_tcp_info(build(FULL_SIZE))


@pytest.mark.parametrize(
    "size, last_known, first_missing",
    [
        (BASE_SIZE, None, "pacing_rate"),
        (BASE_SIZE + 8, "pacing_rate", "max_pacing_rate"),
        # 4 bytes into a u64 is not the whole field: it stays unknown.
        (BASE_SIZE + 12, "pacing_rate", "max_pacing_rate"),
        (144, "segs_in", "notsent_bytes"),
        (160, "data_segs_out", "delivery_rate"),
        (FULL_SIZE - 4, "total_rto_recoveries", "total_rto_time"),
    ],
)
def test_shorter_buffer_from_an_older_kernel(
    size: int, last_known: str, first_missing: str
) -> None:
    info = parse_tcp_info(build(size, rtt=900))
    assert info.rtt == pytest.approx(900e-6)
    assert info.total_retrans == 32
    if last_known is not None:
        assert getattr(info, last_known) is not None
    fields = TcpInfo._fields
    for name in fields[fields.index(first_missing) :]:
        assert getattr(info, name) is None, name


def test_buffer_shorter_than_the_base_is_an_error() -> None:
    with pytest.raises(ValueError, match="104"):
        parse_tcp_info(build(BASE_SIZE - 1))


def test_state_names() -> None:
    assert state_name(1) == "ESTABLISHED"
    assert state_name(7) == "CLOSE"
    assert state_name(8) == "CLOSE_WAIT"
    assert state_name(99) == "UNKNOWN(99)"


def info_with(**over: int) -> TcpInfo:
    return parse_tcp_info(build(FULL_SIZE, **over))


def test_base_rto_ignores_backoff_and_clamps_to_rto_min() -> None:
    # 1 ms rtt on loopback-like links: the 200 ms floor dominates.
    fast = info_with(rtt=1000, rttvar=500, rto=3_200_000, backoff=4)
    assert base_rto(fast) == pytest.approx(0.001 + 0.2)
    # A slow path: srtt + 4 * rttvar beyond the floor.
    slow = info_with(rtt=300_000, rttvar=100_000, rto=700_000)
    assert base_rto(slow) == pytest.approx(0.7)
    # No RTT sample yet: the kernel's initial timeout.
    assert base_rto(info_with(rtt=0, rttvar=0)) == 1.0
    # Never beyond TCP_RTO_MAX.
    assert base_rto(info_with(rtt=200_000_000, rttvar=1)) == 120.0


@pytest.mark.parametrize(
    "over, expected",
    [
        ({"rtt": 1000}, "healthy"),
        ({"rtt": 50_000}, "healthy"),  # at the threshold: not above it
        ({"rtt": 50_001}, "degraded"),
        ({"rtt": 200_000}, "degraded"),
        ({"rtt": 200_001}, "unhealthy"),
        ({"rtt": 1000, "retransmits": 1}, "degraded"),
        ({"rtt": 1000, "retransmits": 2}, "degraded"),
        ({"rtt": 1000, "retransmits": 3}, "unhealthy"),
        ({"rtt": 1000, "probes": 1}, "degraded"),
        ({"rtt": 1000, "probes": 3}, "unhealthy"),
        ({"rtt": 1000, "state": 8}, "unhealthy"),
        ({"rtt": 1000, "state": 7}, "unhealthy"),
    ],
)
def test_grade_rule(over: dict, expected: str) -> None:
    base = {"retransmits": 0, "probes": 0, "state": 1}
    base.update(over)
    assert grade(info_with(**base), GuardConfig()) == expected


def test_grade_follows_config_thresholds() -> None:
    info = info_with(rtt=30_000, retransmits=1, probes=0, state=1)
    assert grade(info, GuardConfig()) == "degraded"
    lenient = GuardConfig(
        health_rtt_degraded=0.1, health_retrans_degraded=1, health_retrans_unhealthy=5
    )
    assert grade(info, lenient) == "healthy"
    strict = GuardConfig(health_rtt_degraded=0.01, health_rtt_unhealthy=0.02)
    assert grade(info, strict) == "unhealthy"


# ---------------------------------------------------------------- live sockets


@pytest.fixture
def tcp_pair() -> Iterator[Tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=5)
    peer, _ = listener.accept()
    listener.close()
    try:
        yield client, peer
    finally:
        client.close()
        peer.close()


@linux_only
def test_live_established_connection(tcp_pair: Tuple[socket.socket, socket.socket]) -> None:
    client, peer = tcp_pair
    client.sendall(b"x" * 1000)
    assert peer.recv(4096)
    info = read_tcp_info(client)
    assert info is not None
    assert info.state_name == "ESTABLISHED"
    assert 0 < info.rtt < 1.0  # a sample was taken; loopback is nowhere near a second
    assert info.retransmits == 0 and info.unacked == 0
    assert info.snd_mss > 0 and info.snd_cwnd > 0
    if info.bytes_sent is not None:
        assert info.bytes_sent == 1000
    assert grade(info, GuardConfig(health_rtt_degraded=1.0, health_rtt_unhealthy=1.0)) == "healthy"


@linux_only
def test_live_close_wait_after_peer_fin(tcp_pair: Tuple[socket.socket, socket.socket]) -> None:
    client, peer = tcp_pair
    peer.shutdown(socket.SHUT_WR)
    assert client.recv(1) == b""  # the FIN has arrived
    info = read_tcp_info(client)
    assert info is not None
    assert info.state_name == "CLOSE_WAIT"
    assert grade(info, GuardConfig()) == "unhealthy"


@linux_only
def test_live_tls_socket_reads_the_raw_socket(tls_pair: Tuple[ssl.SSLContext, str]) -> None:
    server_ctx, ca_path = tls_pair
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: List[ssl.SSLSocket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        tls = server_ctx.wrap_socket(conn, server_side=True)
        accepted.append(tls)
        tls.recv(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ctx = ssl.create_default_context(cafile=ca_path)
    raw = socket.create_connection(listener.getsockname(), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"hello")
        thread.join(5)
        info = read_tcp_info(tls)
        assert info is not None and info.state_name == "ESTABLISHED"

        class Transport:  # the shape of urllib3's SSLTransport: the socket is `.socket`
            socket = tls

        nested = read_tcp_info(Transport())
        assert nested is not None and nested.state_name == "ESTABLISHED"
    listener.close()
    for s in accepted:
        s.close()


def test_non_tcp_and_closed_sockets_give_none() -> None:
    a, b = socket.socketpair()
    assert read_tcp_info(a) is None
    a.close()
    b.close()
    assert read_tcp_info(a) is None  # closed: fileno -1
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert read_tcp_info(udp) is None
    udp.close()
    assert read_tcp_info(None) is None
    assert read_tcp_info(object()) is None


@linux_only
def test_read_flow_reads_each_field_from_its_offset() -> None:
    class Fake:
        def getsockopt(self, level: int, name: int, size: int) -> bytes:
            return build(FULL_SIZE)[:size]

    flow = read_flow(Fake())
    assert flow is not None
    assert (flow.retransmits, flow.probes, flow.unacked) == (3, 4, 13)
    assert flow.sent_ago == pytest.approx(18e-3)  # last_data_sent
    assert flow.silent == pytest.approx(21e-3)  # last_ack_recv
    assert (flow.rtt, flow.rttvar) == (pytest.approx(24e-6), pytest.approx(25e-6))
    assert flow.notsent == 2003


@linux_only
def test_read_flow_from_an_older_kernels_shorter_struct() -> None:
    class Fake:
        def getsockopt(self, level: int, name: int, size: int) -> bytes:
            return build(BASE_SIZE)

    flow = read_flow(Fake())
    assert flow is not None and flow.unacked == 13 and flow.notsent == 0
