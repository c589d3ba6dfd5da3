"""urllib3 connection subclasses that remember what the guard needs to know.

Each connection records when it was opened and last returned to the pool,
the peer address it reached at connect (its fingerprint), and how many bytes
of the current request reached the kernel: the "nothing written" fact that
decides whether a non-idempotent request may be replayed.  While a replayable
request waits for its answer, the connection is registered with the in-flight
watchdog (``_watchdog``), which may probe its flow or abort it.
"""

from __future__ import annotations

import select
import socket
import sys
import time
from typing import Any, Callable, Final, List, Optional, Tuple

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ProtocolError
from urllib3.util.wait import wait_for_read

from . import _watchdog
from ._condemn import condemned_at
from ._config import GuardConfig
from ._failure import CONNECT, REQUEST, RESPONSE
from ._instrument import NoopInstrumentation, hooks
from ._judging import judge_at
from ._keepalive import (
    HOST_CONSTANTS,
    HOST_KIND,
    SocketOption,
    probe_options,
    resting_options,
    windows_keepalive_vals,
)
from ._tcpinfo import (
    FlowState,
    grade,
    raw_socket,
    read_flow,
    read_vitals,
)
from ._validation import Peer, gather, peer_of, quiet_window, reuse_verdict

__all__ = ["AzHTTPConnection", "AzHTTPSConnection", "GuardedConnection"]

#: urllib3 1.26 (not 2.x): it reads a preloaded body outside getresponse(),
#: and polls a pooled socket itself where 2.x asks ``is_connected``, so the
#: pool adds the rest of the reuse check at claim.  Decided once, here, for
#: the connection and its pool.
LEGACY_URLLIB3: Final = not hasattr(HTTPConnection, "is_connected")


def _apply(raw: Any, options: List[SocketOption]) -> None:
    try:
        for level, name, value in options:
            raw.setsockopt(level, name, value)
    except (OSError, TypeError, OverflowError, ValueError):
        # The socket died meanwhile (the request will tell), or the platform
        # refuses a value: the request goes on with the options it has.
        pass


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
    #: Bytes of the current request accepted by the kernel.
    azguard_bytes_sent: int = 0
    #: True when part of the request went through a path that cannot count bytes.
    azguard_uncounted: bool = False
    #: Facts about the current request, set by the pool before it is sent.
    azguard_idempotency_key: bool = False
    azguard_body_replayable: bool = True
    #: The current request may be replayed: the watchdog watches it.
    azguard_watched: bool = False
    #: Reason the last reuse check refused this connection.
    azguard_evicted_reason: Optional[str] = None
    #: The OS-level socket under any TLS wrapper, found once at connect.
    azguard_raw: Any = None
    #: A poll object registered for that socket (reuse checks).
    azguard_poller: Any = None
    #: The TLS socket's ``pending`` (decrypted bytes buffered), None for plain TCP.
    azguard_pending: Any = None
    #: ``_validation.quiet_window`` of the config (0: every reuse checks fully).
    azguard_quiet_window: float = 0.0
    #: Its pool goes through a proxy (set by the pool).
    azguard_via_proxy: bool = False
    #: Connected during the current request (not reused from the pool).
    azguard_fresh: bool = False
    #: The watchdog is probing this flow while its request waits.
    azguard_probing: bool = False
    #: Why the watchdog aborted the current request ("blackhole",
    #: "condemned_inflight"), read when the aborted read fails.
    azguard_verdict: Optional[str] = None

    sock: Any

    # -- urllib3's hooks (the mixin comes first in both connection classes) -----

    def connect(self) -> None:
        start = time.monotonic()
        # Unset until the connection is up: a CONNECT tunnel sends its own
        # request from inside connect(), before the in-flight options apply.
        self.azguard_raw = None
        self.azguard_fresh = True
        try:
            super().connect()  # type: ignore[misc]
        except BaseException as exc:
            judge_at(self, exc, CONNECT)
            raise
        self.azguard_after_connect(time.monotonic() - start)

    def send(self, data: Any) -> None:
        """Send ``data`` counting what the kernel accepted (one frame: this
        runs for every request)."""
        sock = self.sock
        if type(data) is bytes and sock is not None:
            # The common case (urllib3 sends the request head as bytes).
            sys.audit("http.client.send", self, data)
            try:
                # socket.sendall() hides how much went out before an error;
                # send() tells, which is what the "nothing written" rule needs.
                sent = sock.send(data)
                self.azguard_bytes_sent += sent
                if sent < len(data):
                    self._azguard_send_rest(sock, memoryview(data)[sent:])
            except OSError as exc:
                judge_at(self, exc, REQUEST)
                raise
            return
        try:
            payload: Any = data
            if type(data) is not bytes:
                try:
                    payload = memoryview(data).cast("B")
                except TypeError:
                    payload = None  # not bytes-like: http.client's generic path
            if sock is None and payload is not None and getattr(self, "auto_open", False):
                # http.client connects lazily on the first send (urllib3 2.x
                # relies on it for plain HTTP); connecting here keeps the count.
                self.connect()
                sock = self.sock
            if payload is None or sock is None:
                # Uncountable (http.client raises NotConnected, or iterates).
                self.azguard_uncounted = True
                super().send(data)  # type: ignore[misc]
                return
            sys.audit("http.client.send", self, payload)
            self._azguard_send_rest(sock, payload)
        except OSError as exc:
            judge_at(self, exc, REQUEST)
            raise

    def _azguard_send_rest(self, sock: Any, view: Any) -> None:
        """Send all of ``view``, counting; one call usually takes it all."""
        while view:
            sent = sock.send(view)
            self.azguard_bytes_sent += sent
            view = view[sent:]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            # urllib3 1.26 asks with buffering=True first (Python 2's
            # signature), and asks again without when refused, as
            # http.client (the only getresponse below this one) refuses.
            raise TypeError("getresponse() takes no arguments")
        # A replayable request is watched while it waits, so that the
        # watchdog can probe or abort it (_watchdog).  A stream=True body is
        # the caller's once the headers are in: it is no longer watched.
        watched = self.azguard_watched
        if watched:
            _watchdog.watch(self, time.monotonic())
        try:
            response = super().getresponse()  # type: ignore[misc]
        except BaseException as exc:
            if watched:
                self._azguard_unwatch()
            judge_at(self, exc, RESPONSE)
            raise
        if watched:
            _watchdog.unwatch(self)  # returns once the watchdog is done with it
            if self.azguard_probing or self.azguard_verdict is not None:
                self._azguard_after_watchdog()
        # Read back by the breaker: a success on a fresh connection proves the
        # host reachable (urllib3 1.26 wraps this object in its own response,
        # and reads the body there: see _pool._LegacyResponse).
        response.azguard_fresh = self.azguard_fresh
        if LEGACY_URLLIB3:
            response.azguard_conn = self
        return response

    def azguard_read_body(self, read: Callable[[Any, Any], Any], r: Any, response_kw: Any) -> Any:
        """urllib3 1.26 reads a preloaded body outside ``getresponse``: run
        ``read(r, response_kw)`` watched like the wait for the headers, and
        judge its failure."""
        watched = self.azguard_watched
        if watched:
            _watchdog.watch(self, time.monotonic())
        try:
            response = read(r, response_kw)
            self._azguard_check_aborted()
        except BaseException as exc:
            judge_at(self, exc, RESPONSE)
            raise
        finally:
            if watched:
                self._azguard_unwatch()
        return response

    def _azguard_unwatch(self) -> None:
        _watchdog.unwatch(self)  # returns once the watchdog is done with it
        if self.azguard_probing:
            self.azguard_relax()  # probe options are for a waiting request only

    def _azguard_after_watchdog(self) -> None:
        """The answer came on a flow the watchdog probed, or aborted."""
        if self.azguard_probing:
            self.azguard_relax()
        try:
            self._azguard_check_aborted()
        except ProtocolError as exc:
            judge_at(self, exc, RESPONSE)
            raise

    def _azguard_check_aborted(self) -> None:
        # The watchdog shut the socket down: what was read ended at that EOF,
        # which a body without a length, or urllib3 1.26 (which accepts a
        # short Content-Length, as requests does), would take for the end.
        if self.azguard_verdict is not None:
            raise ProtocolError(
                f"Connection broken: aborted by the in-flight watchdog ({self.azguard_verdict})"
            )

    # -- the watchdog's hooks (called from its thread, under its lock) -----------

    def azguard_flow(self) -> Optional[FlowState]:
        return read_flow(self.azguard_raw) if self.sock is not None else None

    def azguard_start_probing(self, still_watched: Callable[[], bool]) -> bool:
        """Probe the waiting flow every second; False if its request has its
        answer already (``still_watched`` is asked after the flag is up, so
        that a request unwatching meanwhile sees it and waits, see
        ``_watchdog.unwatch``)."""
        self.azguard_probing = True
        if self.sock is None or not still_watched():
            self.azguard_probing = False
            return False
        _apply(self.azguard_raw, probe_options(HOST_CONSTANTS))
        return True

    def azguard_abort(self, reason: str) -> None:
        """End the waiting request: its reader wakes with an error judged as ``reason``."""
        self.azguard_verdict = reason
        raw = self.azguard_raw
        if raw is not None:
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed meanwhile: the request has its outcome already

    # -- connect ---------------------------------------------------------------

    def azguard_after_connect(self, connect_seconds: float) -> None:
        self.azguard_opened_at = time.monotonic()
        self.azguard_idle_since = None
        self.azguard_probing = False
        self.azguard_raw = raw_socket(self.sock)
        self.azguard_poller = None
        self.azguard_pending = getattr(self.sock, "pending", None)
        self.azguard_peer = peer_of(self.azguard_raw)
        config = self.azguard_config
        if config is None:
            return
        instrumentation = hooks()
        if type(instrumentation) is not NoopInstrumentation:
            info = read_vitals(self.azguard_raw)
            if info is not None:
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
            instrumentation = hooks()
            if type(instrumentation) is not NoopInstrumentation:
                rtt = facts.tcp.rtt
                instrumentation.tcp_info(self.azguard_host_label, rtt, grade(facts.tcp, config))
        reason = reuse_verdict(facts, now, config)
        self.azguard_evicted_reason = reason
        return reason

    def azguard_readable(self, raw: Any) -> bool:
        """A zero-timeout poll for FIN, RST or stray bytes, with one poll object
        per connection: urllib3's wait_for_read builds and registers a new one
        on every call."""
        poller = self.azguard_poller
        if poller is None:
            if not hasattr(select, "poll"):
                return bool(wait_for_read(raw, timeout=0.0))
            poller = self.azguard_poller = select.poll()
            poller.register(raw, select.POLLIN)
        return bool(poller.poll(0))

    def _azguard_settled(self, now: float) -> bool:
        """Can only the socket's readability stop this idle connection's reuse?

        True inside its ``quiet_window`` after it went back to the pool, while
        it is younger than ``max_age`` and its peer was not condemned since it
        opened: then ``reuse_verdict`` on the gathered facts says the same as
        a poll alone, and gathering them (a NamedTuple and four calls) is
        skipped on the busy path.
        """
        idle_since = self.azguard_idle_since
        opened_at = self.azguard_opened_at
        if idle_since is None or opened_at is None or now - idle_since >= self.azguard_quiet_window:
            return False
        max_age = self.azguard_config.max_age  # type: ignore[union-attr]
        if max_age is not None and now - opened_at > max_age:
            return False
        peer = self.azguard_peer
        condemned = None if peer is None else condemned_at(peer)
        return condemned is None or opened_at > condemned

    @property
    def is_connected(self) -> bool:
        # urllib3 2.x asks this before reusing a pooled connection; answering
        # with the full reuse check replaces its readability poll instead of
        # adding a second one.  (urllib3 1.26 polls itself; see _pool.)
        if self.sock is None:
            return False
        if self.azguard_config is None:
            return not wait_for_read(self.sock, timeout=0.0)
        poller = self.azguard_poller
        if poller is not None and self._azguard_settled(time.monotonic()):
            pending = self.azguard_pending
            if not poller.poll(0) and not (pending is not None and pending()):
                return True
        return self.azguard_reuse_check(poll=True) is None

    # -- set by the pool, through these methods only -------------------------------

    def azguard_bind(
        self,
        config: GuardConfig,
        host_label: str,
        dns_target: Tuple[str, int],
        via_proxy: bool,
    ) -> None:
        """The pool that made this connection guards it with ``config``."""
        self.azguard_config = config
        self.azguard_quiet_window = quiet_window(config)
        self.azguard_host_label = host_label
        self.azguard_dns_target = dns_target
        self.azguard_via_proxy = via_proxy

    def azguard_claim(
        self,
        watched: bool,
        idempotency_key: bool,
        body_replayable: bool,
    ) -> Optional[str]:
        """A request takes this connection from the pool, with the facts the
        pool knows about it.  Returns why the pooled connection it had was
        replaced by a new one, if it was.

        urllib3 2.x asked ``is_connected`` already (the reason is recorded
        then); urllib3 1.26 polled for FIN/RST itself, and the rest of the
        reuse check runs here.
        """
        reason = self.azguard_evicted_reason
        self.azguard_evicted_reason = None
        if LEGACY_URLLIB3:
            if self.sock is not None:
                if self._azguard_settled(time.monotonic()):
                    reason = None
                else:
                    reason = self.azguard_reuse_check(poll=False)
                    self.azguard_evicted_reason = None
                if reason is not None:
                    self.close()  # type: ignore[attr-defined]
            elif self.azguard_opened_at is not None:
                # urllib3 1.26's own poll found this pooled connection closed
                # by its peer (FIN or RST pending) and closed it.
                reason = "peer_closed"
                self.azguard_opened_at = None
        self.azguard_fresh = False
        self.azguard_verdict = None
        self.azguard_bytes_sent = 0
        self.azguard_uncounted = False
        self.azguard_watched = watched
        self.azguard_idempotency_key = idempotency_key
        self.azguard_body_replayable = body_replayable
        return reason

    @property
    def azguard_nothing_written(self) -> bool:
        return self.azguard_bytes_sent == 0 and not self.azguard_uncounted

    def azguard_put_back(self) -> None:
        """Called as the connection returns to the pool."""
        self.azguard_idle_since = time.monotonic()
        if self.sock is None:
            # Closed on purpose (e.g. "Connection: close"): no flow to judge.
            self.azguard_opened_at = None

    def azguard_relax(self) -> None:
        """Put the configured options back in place of the probe options."""
        self.azguard_probing = False
        config = self.azguard_config
        if self.sock is not None and config is not None:
            _apply(self.azguard_raw, resting_options(config, HOST_CONSTANTS, HOST_KIND))


class AzHTTPConnection(GuardedConnection, HTTPConnection):
    """HTTP connection that records the guard's facts."""


class AzHTTPSConnection(GuardedConnection, HTTPSConnection):
    """HTTPS connection that records the guard's facts."""
