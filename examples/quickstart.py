"""Quick start: a guarded Session against an embedded local keep-alive server.

Run:  python examples/quickstart.py
It starts a tiny HTTP server on 127.0.0.1, sends requests through a Session with
requests-azguard mounted, and prints the keepalive options read back from the
pooled socket with getsockopt.
"""

from __future__ import annotations

import http.server
import socket
import threading

import requests

import requests_azguard


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        body = b"hello from the embedded server\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    session = requests_azguard.mount(requests.Session())
    for _ in range(3):
        response = session.get(url, timeout=5)
    print(f"GET {url} -> {response.status_code} {response.text.strip()!r}")

    # A busy connection keeps the in-flight watchdog's tight options until it
    # has been idle for half a second; relax it now to show the at-rest ones.
    from requests_azguard import _watchdog

    _watchdog.relax_all()
    adapter = session.get_adapter(url)
    manager = adapter.poolmanager
    # RecentlyUsedContainer refuses plain iteration; keys() is its snapshot.
    pools = [manager.pools[key] for key in manager.pools.keys()]  # noqa: SIM118
    sock = next(c for p in pools for c in p.pool.queue if c is not None).sock
    print("socket options read back from the pooled connection:")
    print(f"  SO_KEEPALIVE     = {sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}")
    for name in ("TCP_NODELAY", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT"):
        if hasattr(socket, name):
            value = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
            print(f"  {name:<16} = {value}")
    server.shutdown()


if __name__ == "__main__":
    main()
