"""The metrics endpoint: ``/metrics`` over HTTP from a daemon thread.

Bounded on purpose: at most ``MAX_THREADS`` clients are served at once (the
rest get a 503 at once), and a client silent for ``IDLE_TIMEOUT`` seconds is
dropped, so scrapers can never pin the program's threads.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any, Optional, Set

__all__ = ["IDLE_TIMEOUT", "MAX_THREADS", "MetricsServer", "multiprocess_dir"]

#: Seconds a metrics client may stay silent before its connection is closed.
IDLE_TIMEOUT = 10.0
#: Connections served at once; more are answered 503 and closed at once, so
#: idle or slow clients can never pin more than this many threads.
MAX_THREADS = 8


class MetricsServer:
    """A running metrics endpoint (``/metrics``, also ``/``) in a daemon thread.

    Each client connection is served in its own thread, at most
    ``max_threads`` at once; a client silent for ``idle_timeout`` seconds is
    disconnected.  The listening socket is closed in forked children, so the
    port is free once this process exits even if a child lives on.
    """

    def __init__(
        self,
        addr: str,
        port: int,
        registry: Any = None,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_threads: int = MAX_THREADS,
    ) -> None:
        # Imported here so that importing this module (as the adapter does) stays cheap.
        import http.server
        import ipaddress

        import prometheus_client as pc

        reg = registry

        class Handler(http.server.BaseHTTPRequestHandler):
            # StreamRequestHandler applies this to the connection's socket:
            # a client that sends nothing (or stops reading) is dropped.
            timeout = idle_timeout

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/", "/metrics"):
                    self.send_error(404)
                    return
                body = pc.generate_latest(reg if reg is not None else _scrape_registry())
                self.send_response(200)
                self.send_header("Content-Type", pc.CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes are not the program's business

        family = socket.AF_INET
        try:
            if ipaddress.ip_address(addr).version == 6:
                family = socket.AF_INET6
        except ValueError:
            pass  # "localhost"

        slots = threading.BoundedSemaphore(max_threads)
        owner = self

        class Server(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            # Threads are bounded by ``slots``; socketserver need not keep
            # a list of them to join (it would grow with every scrape on 3.7+).
            block_on_close = False
            # socketserver's default backlog of 5 drops SYNs under a burst
            # of clients (each then waits a second to retry).
            request_queue_size = 128

            def process_request(self, request: Any, client_address: Any) -> None:
                if not slots.acquire(blocking=False):
                    _refuse(request)
                    self.shutdown_request(request)
                    return
                owner._open.add(request)
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    owner._open.discard(request)
                    slots.release()
                    raise

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    owner._open.discard(request)
                    slots.release()

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out or went away is not an error

        # Sockets of connections being served, closed in a forked child.
        self._open: Set[Any] = set()
        self.httpd = Server((addr, port), Handler)
        self.addr = addr
        self.port = self.httpd.server_address[1]
        self.max_threads = max_threads
        self.idle_timeout = idle_timeout
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="azguard-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def _close_in_child(self) -> None:
        """After fork: the serving thread is gone; release the child's copies
        of the listening and client sockets without touching the parent's
        (close() of a duplicated descriptor sends nothing on the wire)."""
        for sock in [self.httpd.socket, *list(self._open)]:
            try:
                sock.close()
            except OSError:
                pass
        self._open.clear()


def _refuse(request: Any) -> None:
    """Tell a client over the thread limit to come back, without blocking."""
    try:
        request.setblocking(False)
        request.send(
            b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    except OSError:
        pass


def multiprocess_dir() -> Optional[str]:
    """prometheus_client's multiprocess directory, if this process uses one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _scrape_registry() -> Any:
    """What the endpoint serves: the default registry, or in multiprocess mode
    (``PROMETHEUS_MULTIPROC_DIR``) every process's values from that directory,
    collected afresh per scrape as prometheus_client prescribes."""
    import prometheus_client as pc

    if not multiprocess_dir():
        return pc.REGISTRY
    from prometheus_client import multiprocess

    registry = pc.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
