"""Fork safety (issue 17, item 5): real ``os.fork()`` workers, a real local server.

A child inherits the parent's pooled connections.  Plain requests then lets
parent and children write into the same TCP flow and read each other's
responses; a guarded child forgets them (without closing them for the
parent) and opens its own.  The server echoes each request's path, a token
unique per request, so a response read by the wrong process shows.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from typing import Any, Dict, List, Tuple

import pytest
import requests
from pooled import pooled_sockets
from servers import Action, HTTPTestServer

from requests_azguard import GuardConfig, mount

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")

WORKERS = 4
PER_WORKER = 1000


def _echo_server() -> HTTPTestServer:
    return HTTPTestServer(lambda req: Action(body=req.target.encode()))


def _fork(child: Any) -> Tuple[int, int]:
    """Run ``child() -> str`` in a forked process; (pid, read end of its pipe)."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read_end)
            os.write(write_end, child().encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def _reap(children: List[Tuple[int, int]], timeout: float) -> Tuple[List[str], int]:
    """Outputs of the children that exited within ``timeout``, and how many hung
    (those are killed)."""
    deadline = time.monotonic() + timeout
    outputs: List[str] = []
    hung = 0
    for pid, fd in children:
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                hung += 1
                break
            time.sleep(0.01)
        with os.fdopen(fd, "rb") as pipe:
            outputs.append(pipe.read().decode())
    return outputs, hung


def _workers(session: requests.Session, url: str, timeout: float) -> Dict[str, int]:
    """The parent pools a connection, forks WORKERS children, and everybody
    sends PER_WORKER requests at once; wrong bodies and errors are counted."""
    assert session.get(f"{url}/warm", timeout=timeout).text == "/warm"

    def work(name: str) -> str:
        wrong = errors = 0
        for i in range(PER_WORKER):
            token = f"/{name}-{i}"
            try:
                if session.get(url + token, timeout=timeout).text != token:
                    wrong += 1
            except requests.RequestException:
                errors += 1
        return f"{wrong} {errors}"

    children = [_fork(lambda w=w: work(f"w{w}")) for w in range(WORKERS)]
    parent = work("parent")
    outputs, hung = _reap(children, timeout=120)
    totals = {"wrong": 0, "errors": 0, "hung": hung, "missing": 0}
    for out in outputs:
        if not out:
            totals["missing"] += 1
            continue
        wrong, errors = map(int, out.split())
        totals["wrong"] += wrong
        totals["errors"] += errors
    p_wrong, p_errors = map(int, parent.split())
    totals["parent_wrong"] = p_wrong
    totals["parent_errors"] = p_errors
    return totals


def test_forked_workers_never_read_another_process_response() -> None:
    with _echo_server() as server:
        plain = _workers(requests.Session(), server.url, timeout=2.0)
    with _echo_server() as server, mount(requests.Session(), GuardConfig()) as guarded:
        result = _workers(guarded, server.url, timeout=10.0)
        # The parent kept its own pooled flow: the children never closed it.
        (sock,) = pooled_sockets(guarded.get_adapter(server.url))
        before = sock.getsockname()
        assert guarded.get(f"{server.url}/after").text == "/after"
        (sock,) = pooled_sockets(guarded.get_adapter(server.url))
        assert sock.getsockname() == before
    print(f"\nplain requests: {plain}\nguarded:        {result}")
    assert result == {
        "wrong": 0,
        "errors": 0,
        "hung": 0,
        "missing": 0,
        "parent_wrong": 0,
        "parent_errors": 0,
    }
    # The same workload without the guard mixes responses up: the test can fail.
    assert plain["wrong"] + plain["parent_wrong"] > 0, plain


def test_fork_while_other_threads_hold_the_locks_never_hangs() -> None:
    """50 forks while four parent threads keep the pools, the breaker registry
    and the watchdog busy: every child finishes its requests."""
    runs, hangs, failures = 50, 0, 0
    with _echo_server() as server, mount(requests.Session(), GuardConfig()) as session:
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                try:
                    session.get(f"{server.url}/busy", timeout=10)
                except requests.RequestException:
                    pass

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        try:

            def child() -> str:
                ok = sum(
                    session.get(f"{server.url}/c{i}", timeout=10).text == f"/c{i}"
                    for i in range(20)
                )
                return str(ok)

            for _ in range(runs):
                outputs, hung = _reap([_fork(child)], timeout=30)
                hangs += hung
                failures += sum(1 for out in outputs if out != "20")
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    print(f"\n{runs} forks: {hangs} hung, {failures} with a wrong or missing answer")
    assert (hangs, failures) == (0, 0)


def test_child_starts_with_fresh_state() -> None:
    from requests_azguard import _breaker_registry, _condemn, _dns

    with _echo_server() as server, mount(requests.Session(), GuardConfig(dns_recheck=60)) as s:
        assert s.get(f"{server.url}/x").text == "/x"
        _condemn.condemn(("127.0.0.1", server.port), time.monotonic())
        _dns.default_cache.addresses("127.0.0.1", server.port, time.monotonic(), 60.0)
        parent_registry = _breaker_registry.registry()
        assert len(parent_registry) == 1

        def child() -> str:
            return " ".join(
                str(x)
                for x in (
                    len(_breaker_registry.registry()),
                    _breaker_registry.registry() is parent_registry,
                    len(_condemn._condemned),
                    len(_dns.default_cache),
                    len(pooled_sockets(s.get_adapter(server.url))),
                    _condemn._lock.acquire(timeout=5),
                )
            )

        # A parent thread holds the condemnation lock across the fork.
        with _condemn._lock:
            outputs, hung = _reap([_fork(child)], timeout=30)
        assert hung == 0
        assert outputs == ["0 False 0 0 0 True"]
        assert len(pooled_sockets(s.get_adapter(server.url))) == 1  # the parent's is still there
