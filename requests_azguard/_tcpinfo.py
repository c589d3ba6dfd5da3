"""Linux ``TCP_INFO``: the kernel's view of one connection, read, graded and probed.

The names the package takes from here live in three modules:
``_tcpinfo_layout`` (``struct tcp_info`` and its parser), ``_tcpinfo_health``
(the fields the reuse check reads on every reuse, the base RTO and the grade)
and ``_tcpinfo_probe`` (what the watchdog reads of a waiting flow, and the
keepalive probe that asks whether the peer still answers).
"""

from __future__ import annotations

from ._tcpinfo_health import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    TcpVitals,
    base_rto,
    grade,
    read_vitals,
)
from ._tcpinfo_layout import (
    BASE_SIZE,
    CLOSE,
    CLOSE_WAIT,
    ESTABLISHED,
    FULL_SIZE,
    IS_LINUX,
    TCP_INFO_OPT,
    TCP_STATES,
    TcpInfo,
    parse_tcp_info,
    raw_socket,
    read_tcp_info,
    state_name,
)
from ._tcpinfo_probe import FlowState, answer_time, answers_probe, read_flow

__all__ = [
    "BASE_SIZE",
    "CLOSE",
    "CLOSE_WAIT",
    "DEGRADED",
    "ESTABLISHED",
    "FULL_SIZE",
    "HEALTHY",
    "IS_LINUX",
    "TCP_INFO_OPT",
    "TCP_STATES",
    "UNHEALTHY",
    "FlowState",
    "TcpInfo",
    "TcpVitals",
    "answer_time",
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
