"""A real redis-server per test, on a free loopback port, that a test can kill and restart.

Import the fixtures into a test module (``from redis_fixtures import redis_server``).
Persistence is off (``--save '' --appendonly no``) so nothing is written to disk.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from typing import Iterator, List, Optional, Tuple

import pytest
from conftest import need, need_tool
from servers import free_port

__all__ = [
    "BreakerProcess",
    "RedisServer",
    "driver_main",
    "redis_server",
    "redis_server_with_password",
]


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, restartable on the same port."""

    def __init__(self, binary: str, password: Optional[str] = None) -> None:
        self.binary = binary
        self.password = password
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="azguard-redis-")
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv: List[str] = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--daemonize",
            "no",
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    reply = s.recv(64)
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("redis-server did not answer within 10 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def client(self) -> object:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)

    def close(self) -> None:
        self.kill()
        try:
            for name in os.listdir(self.dir):
                os.unlink(os.path.join(self.dir, name))
            os.rmdir(self.dir)
        except OSError:
            pass


def _server(password: Optional[str]) -> Iterator[RedisServer]:
    try:
        import redis  # noqa: F401
    except ImportError:
        need(False, "the redis package is not installed (pip install -e '.[test]')")
    server = RedisServer(need_tool("redis-server"), password)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    yield from _server(None)


@pytest.fixture
def redis_server_with_password() -> Iterator[RedisServer]:
    yield from _server("s3cret-Pa55word")


# -- a breaker process driven over stdin/stdout ------------------------------------
# Each line in is a JSON command, each line out its JSON answer.  The process
# has its own injected clock, so tests move time in both processes in step.

DRIVER = """
import json, sys
sys.path.insert(0, {tests_dir!r})
import redis_fixtures
redis_fixtures.driver_main()
"""


def driver_main() -> None:
    import json
    import sys
    from urllib.parse import urlsplit

    import requests

    from requests_azguard import CircuitOpenError, GuardConfig, mount
    from requests_azguard._breaker_registry import registry, reset_breakers

    now = [0.0]
    connects: List[Tuple[str, int]] = []

    def audit(event: str, args: Tuple[object, ...]) -> None:
        if event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple) and len(address) >= 2:
                connects.append((str(address[0]), int(address[1])))

    sys.addaudithook(audit)
    session: Optional[requests.Session] = None
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        answer: dict = {}
        if op == "init":
            now[0] = float(cmd["clock"])
            reset_breakers(
                clock=lambda: now[0],
                sync_interval=cmd.get("sync_interval", 0.5),
                reattach_interval=cmd.get("reattach_interval", 2.0),
            )
            cfg = GuardConfig(
                retries=0,
                breaker_fail_max=cmd.get("fail_max", 3),
                breaker_reset_timeout=cmd.get("reset_timeout", 30.0),
                redis_url=cmd["redis_url"],
            )
            session = mount(requests.Session(), cfg)
        elif op == "advance":
            now[0] += float(cmd["s"])
        elif op == "get":
            assert session is not None
            port = urlsplit(cmd["url"]).port
            before = len([c for c in connects if c[1] == port])
            try:
                answer["status"] = session.get(cmd["url"], timeout=2).status_code
                answer["outcome"] = "ok"
            except CircuitOpenError:
                answer["outcome"] = "open"
            except Exception as exc:  # reported to the test
                answer["outcome"] = "error"
                answer["error"] = type(exc).__name__
            answer["connects"] = len([c for c in connects if c[1] == port]) - before
        elif op == "link":
            links = registry().links()
            answer = {
                "attached": [link.attached for link in links],
                "outages": sum(link.outages for link in links),
            }
        print(json.dumps(answer), flush=True)


class BreakerProcess:
    """A real Python subprocess with its own breaker registry and clock."""

    def __init__(self, redis_url: str, clock: float, **options: object) -> None:
        import json
        import sys

        tests_dir = os.path.dirname(os.path.abspath(__file__))
        self._json = json
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER.format(tests_dir=tests_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.send(op="init", redis_url=redis_url, clock=clock, **options)

    def send(self, **cmd: object) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(self._json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"breaker process died (exit {self.proc.poll()})")
        return dict(self._json.loads(line))

    def get(self, url: str) -> dict:
        return self.send(op="get", url=url)

    def advance(self, seconds: float) -> None:
        self.send(op="advance", s=seconds)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
