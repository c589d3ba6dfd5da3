"""Real-socket test servers: keep-alive HTTP(S) with scripted faults, and a proxy.

Every server listens on 127.0.0.1 on a free port, serves each connection in
its own daemon thread and stops when ``close()`` is called (they are context
managers).  Faults are real: RST is ``SO_LINGER 0`` then close, FIN is a plain
close, silence is reading and never answering.
"""

from __future__ import annotations

import dataclasses
import select
import socket
import ssl
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

# The drill's fault proxy resets flows the same way: one helper for both.
from requests_azguard.tools.fault_proxy import rst_close

__all__ = [
    "Action",
    "HTTPTestServer",
    "ProxyServer",
    "Request",
    "free_port",
    "rst_close",
]


@dataclasses.dataclass
class Request:
    method: str
    target: str
    headers: Dict[str, str]
    body: bytes
    conn_id: int  # which accepted connection (0-based)
    conn_seq: int  # 1 for the first request on that connection


@dataclasses.dataclass
class Action:
    """What the server does with one request."""

    kind: str = "respond"  # respond | rst | fin | silence | rst_before_read
    status: int = 200
    body: bytes = b"ok"
    headers: Dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    close: bool = False  # close (FIN) after responding
    # Send only this many body bytes, then wait ``stall`` seconds (or until the
    # server stops) before sending the rest: a response that stops mid-body.
    partial: Optional[int] = None
    stall: float = 0.0
    # Send these bytes as the whole response (status line included), then
    # close with FIN: malformed or truncated responses.
    raw: Optional[bytes] = None

    @classmethod
    def ok(cls, body: bytes = b"ok", **kw: object) -> Action:
        return cls(body=body, **kw)  # type: ignore[arg-type]


Behaviour = Callable[[Request], Action]


class _Stopped(Exception):
    pass


class HTTPTestServer:
    """A keep-alive HTTP/1.1 server whose every answer is scripted.

    ``behaviour(request) -> Action`` decides; the default answers 200 "ok".
    ``on_accept(sock, conn_id)`` may act on a connection before any request
    is read (return False to stop serving it).
    """

    def __init__(
        self,
        behaviour: Optional[Behaviour] = None,
        tls: Optional[ssl.SSLContext] = None,
        on_accept: Optional[Callable[[socket.socket, int], bool]] = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.behaviour = behaviour or (lambda req: Action())
        self.on_accept = on_accept
        self.tls = tls
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(128)
        self.host = host
        self.port = self.listener.getsockname()[1]
        self.requests: List[Request] = []
        self.connections: List[socket.socket] = []
        self.peers: List[Tuple[str, int]] = []
        self.lock = threading.Lock()
        self.stalled = threading.Event()  # set when a partial response paused
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    # -- public ---------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def accepted(self) -> int:
        with self.lock:
            return len(self.connections)

    def close(self) -> None:
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.connections)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def __enter__(self) -> HTTPTestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.listener], [], [], 0.1)
                if not r:
                    continue
                sock, peer = self.listener.accept()
            except (OSError, ValueError):  # ValueError: the listener was closed
                return
            with self.lock:
                conn_id = len(self.connections)
                self.connections.append(sock)
                self.peers.append(peer)
            threading.Thread(target=self._serve, args=(sock, conn_id), daemon=True).start()

    def _serve(self, raw: socket.socket, conn_id: int) -> None:
        sock: socket.socket = raw
        try:
            if self.on_accept is not None and not self.on_accept(raw, conn_id):
                return
            if self.tls is not None:
                sock = self.tls.wrap_socket(raw, server_side=True)
            buf = b""
            seq = 0
            while not self._stop.is_set():
                head, buf = self._read_until(sock, buf, b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                seq += 1
                req = Request(method, target, headers, b"", conn_id, seq)
                action = self.behaviour(req)
                if action.kind == "rst_before_read":
                    rst_close(raw)
                    return
                body, buf = self._read_body(sock, buf, headers)
                req.body = body
                with self.lock:
                    self.requests.append(req)
                if action.kind == "rst":
                    rst_close(raw)
                    return
                if action.kind == "fin":
                    sock.close()
                    return
                if action.kind == "silence":
                    while not self._stop.wait(0.05):
                        pass
                    return
                if action.delay:
                    self._stop.wait(action.delay)
                if action.raw is not None:
                    sock.sendall(action.raw)
                    sock.close()
                    return
                self._respond(sock, action)
                if action.close:
                    sock.close()
                    return
        except (_Stopped, OSError, ValueError, ssl.SSLError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _recv(self, sock: socket.socket) -> bytes:
        while True:
            if self._stop.is_set():
                raise _Stopped()
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                break
            r, _, _ = select.select([sock], [], [], 0.1)
            if r:
                break
        data = sock.recv(65536)
        if not data:
            raise _Stopped()
        return data

    def _read_until(self, sock: socket.socket, buf: bytes, marker: bytes) -> Tuple[bytes, bytes]:
        while marker not in buf:
            buf += self._recv(sock)
        head, rest = buf.split(marker, 1)
        return head, rest

    def _read_exact(self, sock: socket.socket, buf: bytes, n: int) -> Tuple[bytes, bytes]:
        while len(buf) < n:
            buf += self._recv(sock)
        return buf[:n], buf[n:]

    def _read_body(
        self, sock: socket.socket, buf: bytes, headers: Dict[str, str]
    ) -> Tuple[bytes, bytes]:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                line, buf = self._read_until(sock, buf, b"\r\n")
                size = int(line.split(b";")[0], 16)
                chunk, buf = self._read_exact(sock, buf, size + 2)
                if size == 0:
                    return body, buf
                body += chunk[:-2]
        n = int(headers.get("content-length", "0"))
        return self._read_exact(sock, buf, n)

    def _respond(self, sock: socket.socket, action: Action) -> None:
        headers = {"Content-Length": str(len(action.body)), "Content-Type": "text/plain"}
        headers.update(action.headers)
        if action.close:
            headers["Connection"] = "close"
        head = f"HTTP/1.1 {action.status} X\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        if action.partial is None:
            sock.sendall(head.encode("latin-1") + b"\r\n" + action.body)
            return
        sock.sendall(head.encode("latin-1") + b"\r\n" + action.body[: action.partial])
        self.stalled.set()
        self._stop.wait(action.stall)
        sock.sendall(action.body[action.partial :])


class ProxyServer:
    """A forwarding HTTP proxy that also tunnels CONNECT, on 127.0.0.1.

    ``forwarded`` and ``tunnels`` count what went through it, so a test can
    prove traffic used the proxy.
    """

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.forwarded = 0
        self.tunnels = 0
        self.client_socks: List[socket.socket] = []
        self._stop = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for s in list(self.client_socks):
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> ProxyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.listener], [], [], 0.1)
                if not r:
                    continue
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.client_socks.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: Optional[socket.socket] = None
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = client.recv(65536)
                if not data:
                    return
                buf += data
            head, rest = buf.split(b"\r\n\r\n", 1)
            method, target, _ = head.split(b"\r\n")[0].decode().split(" ", 2)
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                with self.lock:
                    self.tunnels += 1
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
            else:
                # Absolute-form request: relay the bytes to the origin as they are;
                # the test servers accept absolute-form targets.
                hostport = target.split("/")[2]
                host, port = hostport.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                with self.lock:
                    self.forwarded += 1
                upstream.sendall(head + b"\r\n\r\n" + rest)
            self._pump(client, upstream)
        except OSError:
            pass
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        socks = [a, b]
        while not self._stop.is_set():
            r, _, _ = select.select(socks, [], [], 0.1)
            for s in r:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)


def free_port() -> int:
    """A loopback port nothing listens on right now (free until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` (for conditions set by other threads); never a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()
