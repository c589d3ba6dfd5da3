"""A local TCP proxy that can kill every flow through it at one moment.

``azguard drill --fault reset`` and ``--fault fin`` need a fault that works
without root: the client talks to the proxy, the proxy to the server, and at
the fault moment the proxy aborts (RST, via ``SO_LINGER`` 0) or closes (FIN)
the client side of every existing flow.  Flows accepted afterwards work, as
after a load balancer restart or a NAT that answers for a forgotten flow.

One thread runs a ``selectors`` loop for every flow; the public methods only
post a command and wait for the loop to carry it out, so no socket is ever
closed under a thread that is still using it.
"""

from __future__ import annotations

import queue
import selectors
import socket
import struct
import threading
from typing import Dict, List, Optional, Tuple

__all__ = ["FaultProxy", "rst_close"]

_CHUNK = 65536
# Bytes buffered for a slow reader before the proxy stops reading its writer.
_HIGH_WATER = 4 * _CHUNK


class _Side:
    """One socket of a flow and the bytes waiting to be written to it."""

    __slots__ = ("flow", "mask", "out", "peer", "sock")

    def __init__(self, sock: socket.socket, flow: _Flow) -> None:
        self.sock = sock
        self.flow = flow
        self.out = bytearray()
        self.peer: Optional[_Side] = None
        #: Events the selector watches on ``sock`` (0: not registered).
        self.mask = 0


class _Flow:
    __slots__ = ("client", "closed", "upstream")

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = _Side(client, self)
        self.upstream = _Side(upstream, self)
        self.client.peer = self.upstream
        self.upstream.peer = self.client
        self.closed = False


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; ``reset_all()``/``fin_all()`` inject.

    :param target: ``(host, port)`` of the real server.
    :param host: address to listen on (loopback by default).
    """

    def __init__(self, target: Tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(256)
        self._listener.setblocking(False)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._commands: queue.Queue[Tuple[str, threading.Event, List[int]]] = queue.Queue()
        self._flows: Dict[int, _Flow] = {}
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopped = False
        #: Flows accepted so far.
        self.accepted = 0
        #: Flows the proxy killed with ``reset_all``/``fin_all``.
        self.killed = 0
        self._thread = threading.Thread(target=self._loop, name="azguard-fault-proxy", daemon=True)
        self._thread.start()

    # -- public -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def active(self) -> int:
        """Flows open right now (read without locking: a snapshot)."""
        return len(self._flows)

    def reset_all(self, timeout: float = 5.0) -> int:
        """Abort every existing flow with a TCP RST to the client; returns how many."""
        return self._command("reset", timeout)

    def fin_all(self, timeout: float = 5.0) -> int:
        """Close every existing flow with a FIN to the client; returns how many."""
        return self._command("fin", timeout)

    def close(self) -> None:
        if self._stopped:
            return
        try:
            self._command("stop", 5.0)
        except RuntimeError:
            pass
        self._thread.join(5.0)
        self._wake_w.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop -----------------------------------------------------------------

    def _command(self, what: str, timeout: float) -> int:
        if self._stopped:
            raise RuntimeError("FaultProxy is closed")
        done = threading.Event()
        result: List[int] = []
        self._commands.put((what, done, result))
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if not done.wait(timeout):
            raise RuntimeError(f"FaultProxy did not carry out {what!r} within {timeout}s")
        return result[0] if result else 0

    def _loop(self) -> None:
        try:
            while not self._stopped:
                for key, mask in self._sel.select(timeout=1.0):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._run_commands()
                    else:
                        side: _Side = key.data
                        if side.flow.closed:
                            continue
                        if mask & selectors.EVENT_WRITE:
                            self._flush(side)
                        if mask & selectors.EVENT_READ and not side.flow.closed:
                            self._read(side)
        finally:
            self._stopped = True
            for flow in list(self._flows.values()):
                self._close_flow(flow, "fin")
            for s in (self._listener, self._wake_r):
                try:
                    self._sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()
            self._sel.close()
            self._drain_commands()

    def _drain_commands(self) -> None:
        while True:
            try:
                _, done, result = self._commands.get_nowait()
            except queue.Empty:
                return
            result.append(0)
            done.set()

    def _run_commands(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                what, done, result = self._commands.get_nowait()
            except queue.Empty:
                return
            count = 0
            if what == "stop":
                self._stopped = True
            else:
                for flow in list(self._flows.values()):
                    self._close_flow(flow, what)
                    count += 1
                self.killed += count
            result.append(count)
            done.set()

    def _accept(self) -> None:
        # Several clients may be waiting: take them all now.
        for _ in range(64):
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5.0)
            except OSError:
                rst_close(client)
                continue
            for s in (client, upstream):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            flow = _Flow(client, upstream)
            self._flows[id(flow)] = flow
            self.accepted += 1
            self._update(flow.client)
            self._update(flow.upstream)

    def _read(self, side: _Side) -> None:
        peer = side.peer
        assert peer is not None
        try:
            data = side.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # A reset from one end is passed on as a reset to the other.
            self._close_flow(side.flow, "reset")
            return
        if not data:
            self._close_flow(side.flow, "fin")
            return
        peer.out += data
        self._flush(peer)

    def _flush(self, side: _Side) -> None:
        while side.out:
            try:
                sent = side.sock.send(side.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close_flow(side.flow, "reset")
                return
            del side.out[:sent]
        self._update(side)
        assert side.peer is not None
        self._update(side.peer)

    def _update(self, side: _Side) -> None:
        """Re-arm the selector: write when bytes wait, read while the peer keeps up."""
        peer = side.peer
        assert peer is not None
        mask = 0
        if side.out:
            mask |= selectors.EVENT_WRITE
        if len(peer.out) < _HIGH_WATER:
            mask |= selectors.EVENT_READ
        if mask == side.mask:
            return
        # selectors cannot hold an empty mask: a socket with nothing to do is
        # unregistered until its peer's flush re-arms it.
        if side.mask == 0:
            self._sel.register(side.sock, mask, side)
        elif mask == 0:
            self._sel.unregister(side.sock)
        else:
            self._sel.modify(side.sock, mask, side)
        side.mask = mask

    def _close_flow(self, flow: _Flow, how: str) -> None:
        if flow.closed:
            return
        flow.closed = True
        self._flows.pop(id(flow), None)
        for side in (flow.client, flow.upstream):
            if side.mask:
                self._sel.unregister(side.sock)
                side.mask = 0
        if how == "reset":
            rst_close(flow.client.sock)
        else:
            _fin(flow.client.sock)
        _fin(flow.upstream.sock)


def rst_close(sock: socket.socket) -> None:
    """Close with RST: ``SO_LINGER`` on with a zero timeout discards the send queue."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _fin(sock: socket.socket) -> None:
    # shutdown() sends the FIN even if unread bytes would make close() send a RST.
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()
