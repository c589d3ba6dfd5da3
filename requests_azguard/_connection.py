"""urllib3 connection subclasses that remember what the guard needs to know.

Each connection records when it was opened and last returned to the pool,
the peer address it reached at connect (its fingerprint), and how many bytes
of the current request reached the kernel: the "nothing written" fact that
decides whether a non-idempotent request may be replayed.  While a replayable
request is in flight its socket carries tight watchdog options (see
``_keepalive.inflight_options``), restored when it goes back to the pool.
"""

from __future__ import annotations

import sys
import time
from typing import Any, List, Optional, Tuple

from urllib3.connection import HTTPConnection, HTTPSConnection

from . import _watchdog
from ._config import GuardConfig
from ._instrument import NoopInstrumentation, hooks
from ._keepalive import HOST_CONSTANTS, HOST_KIND, SocketOption, windows_keepalive_vals
from ._tcpinfo import base_rto, grade, raw_socket, read_vitals
from ._validation import Peer, gather, peer_of, reuse_verdict

__all__ = ["AzHTTPConnection", "AzHTTPSConnection", "GuardedConnection"]

# How many base RTOs the request may stay unacknowledged before the verdict:
# the original, a tail-loss probe and two RTO retransmissions (at 1x and 3x)
# must all go unanswered, so ordinary loss is not mistaken for a dead flow.
# The kernel acts on the first retransmission timer past the deadline, about
# one minimum RTO (200 ms) later.
RTO_FACTOR = 3.0


def _apply(raw: Any, options: List[SocketOption]) -> bool:
    try:
        for level, name, value in options:
            raw.setsockopt(level, name, value)
    except (OSError, TypeError, OverflowError, ValueError):
        # The socket died meanwhile (the request will tell), or the platform
        # refuses a value: the request goes on with the options it has.
        return False
    return True


class GuardedConnection:
    """Mixin holding the per-connection facts; I/O stays in urllib3's code."""

    #: The guard's config, set by the pool before connect (None: unguarded).
    azguard_config: Optional[GuardConfig] = None
    #: ``scheme://host:port`` of the pool, for metrics and logs.
    azguard_host_label: str = ""
    #: The name resolved to reach the peer (the proxy's host behind a proxy).
    azguard_dns_target: Optional[Tuple[str, int]] = None
    #: ``time.monotonic()`` when the TCP connection was established.
    azguard_opened_at: Optional[float] = None
    #: ``time.monotonic()`` when the connection last went back to the pool.
    azguard_idle_since: Optional[float] = None
    #: Peer address recorded at connect, compared before each reuse.
    azguard_peer: Optional[Peer] = None
    #: The connection's base RTO (seconds) from its latest TCP_INFO.
    azguard_base_rto: Optional[float] = None
    #: Bytes of the current request accepted by the kernel.
    azguard_bytes_sent: int = 0
    #: True when part of the request went through a path that cannot count bytes.
    azguard_uncounted: bool = False
    #: Facts about the current request, set by the pool before it is sent.
    azguard_idempotency_key: bool = False
    azguard_body_replayable: bool = True
    #: Options to apply before the first byte of the current request.
    azguard_pending_inflight: Optional[Tuple[List[SocketOption], List[SocketOption]]] = None
    #: Options to restore when the connection goes back to the pool.
    azguard_restore: Optional[List[SocketOption]] = None
    #: Reason the last reuse check refused this connection.
    azguard_evicted_reason: Optional[str] = None
    #: The OS-level socket under any TLS wrapper, found once at connect.
    azguard_raw: Any = None
    #: A poll object registered for that socket (reuse checks).
    azguard_poller: Any = None
    #: (user timeout, tighten, restore) computed for the latest user timeout.
    azguard_inflight_cache: Optional[Tuple[float, List[SocketOption], List[SocketOption]]] = None

    sock: Any

    # -- urllib3's hooks (the mixin comes first in both connection classes) -----

    def connect(self) -> None:
        start = time.monotonic()
        # Unset until the connection is up: a CONNECT tunnel sends its own
        # request from inside connect(), before the in-flight options apply.
        self.azguard_raw = None
        super().connect()  # type: ignore[misc]
        self.azguard_after_connect(time.monotonic() - start)

    def send(self, data: Any) -> None:
        if not self._azguard_send(data):
            self.azguard_uncounted = True
            super().send(data)  # type: ignore[misc]

    # -- connect ---------------------------------------------------------------

    def azguard_after_connect(self, connect_seconds: float) -> None:
        self.azguard_opened_at = time.monotonic()
        self.azguard_idle_since = None
        self.azguard_restore = None
        self.azguard_inflight_cache = None
        self.azguard_raw = raw_socket(self.sock)
        self.azguard_poller = None
        self.azguard_peer = peer_of(self.azguard_raw)
        config = self.azguard_config
        if config is None:
            return
        info = read_vitals(self.azguard_raw)
        self.azguard_base_rto = base_rto(info) if info is not None else None
        instrumentation = hooks()
        if info is not None and type(instrumentation) is not NoopInstrumentation:
            instrumentation.tcp_info(self.azguard_host_label, info.rtt, grade(info, config))
        if HOST_KIND == "windows" and HOST_CONSTANTS.SIO_KEEPALIVE_VALS is not None:
            vals = windows_keepalive_vals(config)
            if vals is not None:
                # SIO_KEEPALIVE_VALS is an ioctl, not a socket option, so it
                # cannot travel in urllib3's socket_options list.
                try:
                    raw_socket(self.sock).ioctl(HOST_CONSTANTS.SIO_KEEPALIVE_VALS, vals)
                except (OSError, ValueError, TypeError, OverflowError):
                    pass  # keepalive stays at the system's timing; never fail the request
        hooks().connection_opened(self.azguard_host_label, connect_seconds)

    # -- reuse -----------------------------------------------------------------

    def azguard_reuse_check(self, poll: bool) -> Optional[str]:
        """Why this idle connection must not be reused, or None (see _validation)."""
        config = self.azguard_config
        if config is None or self.sock is None:
            return None
        now = time.monotonic()
        facts = gather(self, now, config, poll, self.azguard_dns_target)
        if facts.tcp is not None:
            self.azguard_base_rto = base_rto(facts.tcp)
            instrumentation = hooks()
            if type(instrumentation) is not NoopInstrumentation:
                rtt = facts.tcp.rtt
                instrumentation.tcp_info(self.azguard_host_label, rtt, grade(facts.tcp, config))
        reason = reuse_verdict(facts, now, config)
        self.azguard_evicted_reason = reason
        return reason

    @property
    def is_connected(self) -> bool:
        # urllib3 2.x asks this before reusing a pooled connection; answering
        # with the full reuse check replaces its readability poll instead of
        # adding a second one.  (urllib3 1.26 polls itself; see _pool.)
        if self.sock is None:
            return False
        if self.azguard_config is None:
            from urllib3.util.wait import wait_for_read

            return not wait_for_read(self.sock, timeout=0.0)
        return self.azguard_reuse_check(poll=True) is None

    # -- per request -----------------------------------------------------------

    def azguard_begin_request(self) -> None:
        self.azguard_bytes_sent = 0
        self.azguard_uncounted = False
        self.azguard_idempotency_key = False
        self.azguard_body_replayable = True
        self.azguard_pending_inflight = None

    @property
    def azguard_nothing_written(self) -> bool:
        return self.azguard_bytes_sent == 0 and not self.azguard_uncounted

    @property
    def azguard_tightened(self) -> bool:
        return self.azguard_restore is not None

    def azguard_inflight_user_timeout(self, ack_timeout: float) -> float:
        rto = self.azguard_base_rto
        if rto is None or RTO_FACTOR * rto <= ack_timeout:
            return ack_timeout
        # Rounded to 100 ms so that the option lists computed for it are
        # reused while the smoothed RTT wanders a little.
        return max(ack_timeout, round(RTO_FACTOR * rto, 1))

    def azguard_put_back(self) -> None:
        """Called as the connection returns to the pool."""
        self.azguard_idle_since = time.monotonic()
        if self.sock is None:
            # Closed on purpose (e.g. "Connection: close"): no flow to judge.
            self.azguard_opened_at = None
            self.azguard_restore = None
        elif self.azguard_restore is not None:
            # Left tight for the next request; relaxed if it stays idle.
            _watchdog.park(self)

    def azguard_relax(self) -> None:
        """Put the generous options back (tight ones are for requests in flight)."""
        restore = self.azguard_restore
        if restore is not None:
            self.azguard_restore = None
            if self.sock is not None:
                _apply(self.azguard_raw, restore)

    def azguard_tighten(self, tighten: List[SocketOption], restore: List[SocketOption]) -> None:
        """Put the in-flight options on now, or before the first byte of a
        connection that is not open yet."""
        if self.sock is None:
            # Not connected yet (or closed since): the options go on the new
            # socket before its first byte; nothing is tight any more.
            self.azguard_restore = None
            self.azguard_pending_inflight = (tighten, restore)
        elif self.azguard_restore is not None:
            return  # still tight from the previous request
        elif _apply(self.azguard_raw, tighten):
            self.azguard_restore = restore

    def _azguard_before_first_byte(self) -> None:
        pending = self.azguard_pending_inflight
        self.azguard_pending_inflight = None
        if pending is not None and self.sock is not None and self.azguard_restore is None:
            tighten, restore = pending
            if _apply(self.azguard_raw, tighten):
                self.azguard_restore = restore

    def _azguard_send(self, data: Any) -> bool:
        """Send a bytes-like ``data`` counting what the kernel accepted.

        Returns False when ``data`` is not bytes-like and the caller must use
        http.client's generic path.
        """
        if type(data) is not bytes:
            try:
                data = memoryview(data).cast("B")
            except TypeError:
                return False
        sock = self.sock
        if sock is None:
            if not getattr(self, "auto_open", False):
                return False  # http.client raises NotConnected
            # http.client connects lazily on the first send (urllib3 2.x
            # relies on it for plain HTTP); connecting here keeps the count.
            self.connect()
            sock = self.sock
        if self.azguard_pending_inflight is not None and self.azguard_raw is not None:
            self._azguard_before_first_byte()
        sys.audit("http.client.send", self, data)
        # socket.sendall() hides how much went out before an error; send()
        # tells, which is what the "nothing written" rule needs.  One call
        # usually takes it all; a partial send continues from a view.
        sent = sock.send(data)
        self.azguard_bytes_sent += sent
        if sent < len(data):
            view = memoryview(data)[sent:]
            while view:
                sent = sock.send(view)
                self.azguard_bytes_sent += sent
                view = view[sent:]
        return True


class AzHTTPConnection(GuardedConnection, HTTPConnection):
    """HTTP connection that records the guard's facts."""


class AzHTTPSConnection(GuardedConnection, HTTPSConnection):
    """HTTPS connection that records the guard's facts."""
