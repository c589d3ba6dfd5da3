"""The drill's embedded server: keep-alive HTTP/1.1 on loopback that echoes the target.

It is also the benchmarks' server.  The tests' ``HTTPTestServer`` is another
server on purpose: it scripts a fault per request, keeps every request it saw
and polls for its stop before each read; the drill and the benchmarks need
none of that, and would pay for it in the throughput they measure.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Dict, List

__all__ = ["SIDE_HEADER", "DrillServer"]

#: The request header that attributes a connection to a side of the drill.
SIDE_HEADER = "X-Drill-Side"
_SIDE_KEY = SIDE_HEADER.lower().encode("latin-1")


class DrillServer:
    """A small keep-alive HTTP/1.1 server on loopback, one thread per connection.

    Each answer's body is the request target, so a client can tell a response
    that belongs to another request (a desynchronised connection).  The
    ``X-Drill-Side`` header of the first request on a connection attributes
    it to a side, which is how the drill counts connections per side.

    :param delay: seconds the server "works" before answering each request.
    """

    def __init__(self, delay: float = 0.0, host: str = "127.0.0.1") -> None:
        self.delay = delay
        self.host = host
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(256)
        # accept() wakes up now and then to notice close().
        self._listener.settimeout(0.25)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: List[socket.socket] = []
        self.accepted = 0
        self.served = 0
        self.connections_by_side: Dict[str, int] = {}
        self._thread = threading.Thread(target=self._accept_loop, name="azguard-drill-server")
        self._thread.daemon = True
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            # shutdown() wakes the thread blocked in recv() on this socket.
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def __enter__(self) -> DrillServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stop.is_set():
                    conn.close()
                    return
                self._conns.append(conn)
                self.accepted += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        first = True
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                method, target, _ = lines[0].split(b" ", 2)
                length = 0
                side = ""
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value.strip())
                    elif name == _SIDE_KEY:
                        side = value.strip().decode("latin-1")
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                if first:
                    first = False
                    with self._lock:
                        self.connections_by_side[side] = self.connections_by_side.get(side, 0) + 1
                if self.delay:
                    time.sleep(self.delay)
                body = b"" if method == b"HEAD" else target
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                    + str(len(target)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                with self._lock:
                    self.served += 1
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            conn.close()
