"""urllib3 connection subclasses that remember what the guard needs to know.

Each connection records when it was opened and last returned to the pool,
the peer address it reached at connect (its fingerprint), and how many bytes
of the current request reached the kernel: the "nothing written" fact that
decides whether a non-idempotent request may be replayed.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, Tuple

from urllib3.connection import HTTPConnection, HTTPSConnection

from ._config import GuardConfig
from ._keepalive import HOST_CONSTANTS, HOST_KIND, windows_keepalive_vals

__all__ = ["AzHTTPConnection", "AzHTTPSConnection", "GuardedConnection"]

Peer = Tuple[Any, ...]


def peer_of(sock: Any) -> Optional[Peer]:
    """``getpeername()`` of the TCP socket under ``sock``, or None if gone."""
    try:
        return tuple(sock.getpeername())
    except (OSError, AttributeError, ValueError):
        return None


class GuardedConnection:
    """Mixin holding the per-connection facts; I/O stays in urllib3's code."""

    #: The guard's config, set by the pool before connect (None: unguarded).
    azguard_config: Optional[GuardConfig] = None
    #: ``time.monotonic()`` when the TCP connection was established.
    azguard_opened_at: Optional[float] = None
    #: ``time.monotonic()`` when the connection last went back to the pool.
    azguard_idle_since: Optional[float] = None
    #: Peer address recorded at connect, compared before each reuse.
    azguard_peer: Optional[Peer] = None
    #: Bytes of the current request accepted by the kernel.
    azguard_bytes_sent: int = 0
    #: True when part of the request went through a path that cannot count bytes.
    azguard_uncounted: bool = False
    #: Requests sent over this connection (1 on the first).
    azguard_requests: int = 0

    sock: Any

    def azguard_after_connect(self) -> None:
        self.azguard_opened_at = time.monotonic()
        self.azguard_idle_since = None
        self.azguard_peer = peer_of(self.sock)
        config = self.azguard_config
        if (
            config is not None
            and HOST_KIND == "windows"
            and HOST_CONSTANTS.SIO_KEEPALIVE_VALS is not None
        ):
            vals = windows_keepalive_vals(config)
            if vals is not None:
                # SIO_KEEPALIVE_VALS is an ioctl, not a socket option, so it
                # cannot travel in urllib3's socket_options list.
                raw = getattr(self.sock, "_sock", self.sock)  # under TLS
                raw.ioctl(HOST_CONSTANTS.SIO_KEEPALIVE_VALS, vals)

    def azguard_begin_request(self) -> None:
        self.azguard_bytes_sent = 0
        self.azguard_uncounted = False
        self.azguard_requests += 1

    @property
    def azguard_nothing_written(self) -> bool:
        return self.azguard_bytes_sent == 0 and not self.azguard_uncounted

    def _azguard_send(self, data: Any) -> bool:
        """Send a bytes-like ``data`` counting what the kernel accepted.

        Returns False when ``data`` is not bytes-like and the caller must use
        http.client's generic path.
        """
        try:
            view = memoryview(data)
        except TypeError:
            return False
        if self.sock is None:
            return False  # let http.client auto-open or raise NotConnected
        sys.audit("http.client.send", self, data)
        view = view.cast("B")
        sock = self.sock
        while view:
            # socket.sendall() hides how much went out before an error; send()
            # tells, which is what the "nothing written" rule needs.
            sent = sock.send(view)
            self.azguard_bytes_sent += sent
            view = view[sent:]
        return True


class AzHTTPConnection(GuardedConnection, HTTPConnection):
    """HTTP connection that records the guard's facts."""

    def connect(self) -> None:
        super().connect()
        self.azguard_after_connect()

    def send(self, data: Any) -> None:
        if not self._azguard_send(data):
            self.azguard_uncounted = True
            super().send(data)


class AzHTTPSConnection(GuardedConnection, HTTPSConnection):
    """HTTPS connection that records the guard's facts."""

    def connect(self) -> None:
        super().connect()
        self.azguard_after_connect()

    def send(self, data: Any) -> None:
        if not self._azguard_send(data):
            self.azguard_uncounted = True
            super().send(data)
