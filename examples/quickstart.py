"""Quick start: a guarded Session against an embedded local keep-alive server.

Run:  python examples/quickstart.py
It starts a tiny HTTP server on 127.0.0.1, sends requests through a Session with
requests-azguard mounted, prints the adapter and its configuration, and runs
``azguard doctor`` against the server, which prints the keepalive options read
back from a live socket with getsockopt.  Only public names are used.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
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
    # The guard's settings live in adapter.azguard_config (adapter.config is
    # requests' own dict); repr() shows the ones that differ from the defaults.
    adapter = session.get_adapter(url)
    print(f"adapter: {adapter!r}")
    print(f"config:  {adapter.azguard_config!r}")

    # `azguard doctor URL` sends one guarded request and reads the socket
    # options back from the live connection with getsockopt.
    sys.stdout.flush()
    subprocess.run([sys.executable, "-m", "requests_azguard", "doctor", url], check=False)
    server.shutdown()


if __name__ == "__main__":
    main()
