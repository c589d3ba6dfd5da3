"""Read keepalive options back from the sockets a guarded Session pooled."""

from __future__ import annotations

import socket
from typing import Any, Dict

LINUX = hasattr(socket, "TCP_KEEPIDLE") and hasattr(socket, "TCP_USER_TIMEOUT")


def read_options(sock: Any) -> Dict[str, int]:
    out = {
        "SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "TCP_NODELAY": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
    }
    if LINUX:
        for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT"):
            out[name] = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
    return out
