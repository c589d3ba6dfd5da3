"""One chaos scenario, run in its own process and private network namespace.

    python tests/scenarios/chaos_load.py '{"scenario": "migrate", "threads": 4, ...}'

Prints one JSON object with every request's outcome and summary numbers.
Scenarios:
  migrate  - traffic from N threads sharing one guarded Session; mid-run every
             existing flow to the server is black-holed (conntrack -D)
  idle     - the pool goes idle, the flows are black-holed, traffic resumes
             after the keepalive detection window
  loss     - random packet loss on the server port during sequential GETs
  slow     - the server acknowledges and answers only after a delay
  midbody  - the first response stops mid-body and its flow is black-holed
  post     - a POST is written into a flow that was black-holed while idle
  deadhost - every packet to the server port is dropped (a host that vanished):
             the breaker opens and later requests fail fast without a socket
  lossy_slow   - random loss while GETs wait 2-3 s for a slow server: no verdict
  lossy_stream - random loss while stream=True downloads are read slowly
  post_sibling - a POST waits on a flow that is black-holed while a GET's
                 verdict condemns the peer: the POST is not aborted
  lone     - one request, acknowledged, whose answer is black-holed: the
             watchdog's probes judge it and it is replayed
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from requests_azguard.tools import netns  # noqa: E402

# Must run before any thread exists (the namespace switch is per thread).
netns.enter_private_netns()

import requests  # noqa: E402
from servers import Action, HTTPTestServer  # noqa: E402

import requests_azguard  # noqa: E402
from requests_azguard._instrument import NoopInstrumentation, add_instrumentation  # noqa: E402


class Counter(NoopInstrumentation):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Dict[str, int] = {}

    def bump(self, key: str) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def connection_opened(self, host: str, connect_seconds: float) -> None:
        self.bump("opened")

    def connection_evicted(self, host: str, reason: str) -> None:
        self.bump("evicted:" + reason)

    def blackhole(self, host: str) -> None:
        self.bump("blackhole")

    def retry(self, host: str, reason: str) -> None:
        self.bump("retry:" + reason)

    def error(self, host: str, errno_name: str) -> None:
        self.bump("error:" + errno_name)

    def condemned(self, host: str, connections: int) -> None:
        self.bump("condemned")


def percentile(values: List[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main(params: Dict[str, Any]) -> Dict[str, Any]:
    scenario = params["scenario"]
    delay = float(params.get("server_delay", 0.0))
    body = b"ok"
    if scenario == "midbody":
        body = b"x" * 100_000

        def behaviour(req: Any) -> Action:
            # Only the very first response stalls half-way.
            if req.conn_id == 0 and req.conn_seq == 1:
                return Action(body=body, partial=50_000, stall=30.0)
            return Action(body=body)

        server = HTTPTestServer(behaviour)
    elif scenario == "lossy_slow":
        rng = random.Random(int(params.get("seed", 1)))
        server = HTTPTestServer(lambda req: Action(delay=rng.uniform(2.0, 3.0)))
    elif scenario == "lossy_stream":
        body = os.urandom(1 << 20) * int(params.get("megabytes", 20))
        server = HTTPTestServer(lambda req: Action(body=body))
    elif scenario == "post_sibling":
        posted = threading.Event()

        def behaviour(req: Any) -> Action:
            if req.method == "POST":
                posted.set()
                return Action(delay=float(params.get("post_delay", 3.0)))
            return Action()

        server = HTTPTestServer(behaviour)
    elif scenario == "lone":
        got_first = threading.Event()
        faulted = threading.Event()

        def behaviour(req: Any) -> Action:
            if req.conn_id == 0 and req.conn_seq == 2:
                # The request is acknowledged; its answer will be black-holed.
                got_first.set()
                faulted.wait(10)
            return Action(delay=delay)

        server = HTTPTestServer(behaviour)
    else:
        server = HTTPTestServer(lambda req: Action(delay=delay))
    cfg_kwargs = dict(params.get("config", {}))
    if "default_timeout" in cfg_kwargs:
        cfg_kwargs["default_timeout"] = tuple(cfg_kwargs["default_timeout"])
    config = requests_azguard.GuardConfig(**cfg_kwargs)
    counter = Counter()
    add_instrumentation(counter)
    plain = params.get("plain", False)
    session = requests.Session() if plain else requests_azguard.mount(requests.Session(), config)
    if plain and params.get("plain_retries"):
        from requests.adapters import HTTPAdapter

        session.mount("http://", HTTPAdapter(max_retries=int(params["plain_retries"])))
    url = server.url + "/x"
    timeout = tuple(params.get("timeout", (2, 10)))
    results: List[Dict[str, Any]] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    stop_at = t0 + float(params.get("duration", 5.0))
    fault_at = t0 + float(params.get("fault_after", 1.5))
    interval = float(params.get("interval", 0.05))
    fault_time: Dict[str, float] = {}

    def one() -> None:
        start = time.monotonic()
        err = None
        try:
            r = session.get(url, timeout=timeout)
            ok = r.status_code == 200 and r.content == body
        except Exception as exc:
            ok = False
            err = f"{type(exc).__name__}: {exc}"[:300]
        record(start, ok, err)

    def record(start: float, ok: bool, err: Any) -> None:
        end = time.monotonic()
        with lock:
            results.append({"start": start - t0, "end": end - t0, "ok": ok, "error": err})

    def worker() -> None:
        while time.monotonic() < stop_at:
            one()
            time.sleep(interval)

    if scenario == "migrate":
        threads = [threading.Thread(target=worker) for _ in range(int(params.get("threads", 4)))]
        for t in threads:
            t.start()
        time.sleep(max(0.0, fault_at - time.monotonic()))
        fault_time["t"] = time.monotonic() - t0
        fault_time["flows"] = netns.blackhole_port(server.port)
        for t in threads:
            t.join()
    elif scenario == "idle":
        n = int(params.get("threads", 4))
        # Fill the pool with n connections, then let it go idle.
        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        fault_time["t"] = time.monotonic() - t0
        fault_time["flows"] = netns.blackhole_port(server.port)
        time.sleep(float(params.get("idle_wait", 4.0)))
        resume = time.monotonic() - t0
        fault_time["resume"] = resume
        for _ in range(int(params.get("requests", 20))):
            one()
    elif scenario == "midbody":
        worker_thread = threading.Thread(target=one)
        worker_thread.start()
        if not server.stalled.wait(10):
            raise SystemExit("the server never reached the stall")
        time.sleep(0.1)  # let the first half reach the client
        fault_time["t"] = time.monotonic() - t0
        fault_time["flows"] = netns.blackhole_port(server.port)
        worker_thread.join()
    elif scenario == "post":
        # Warm a pooled connection, black-hole it, then POST into it.
        session.post(url, data=b"warm", timeout=timeout)
        fault_time["t"] = time.monotonic() - t0
        fault_time["flows"] = netns.blackhole_port(server.port)
        start = time.monotonic()
        try:
            session.post(url, data=b"payload", headers={"X-Request-Id": "p1"}, timeout=timeout)
            fault_time["post"] = "ok"
        except Exception as exc:
            fault_time["post"] = type(exc).__name__
            fault_time["post_is_connection_error"] = isinstance(exc, requests.ConnectionError)
            fault_time["post_is_timeout"] = isinstance(exc, requests.Timeout)
            fault_time["post_is_read_timeout"] = isinstance(exc, requests.ReadTimeout)
        fault_time["post_s"] = time.monotonic() - start
        fault_time["delivered_p1"] = sum(
            1 for q in server.requests if q.headers.get("x-request-id") == "p1"
        )
        one()  # the next request goes out on a fresh connection
        from requests_azguard._breaker_registry import registry

        fault_time["breaker_states"] = sorted({b.state for b in registry().breakers()})
    elif scenario == "deadhost":
        from requests_azguard import CircuitOpenError

        netns.drop_port(server.port)
        outcomes: Dict[str, int] = {}
        for _ in range(int(params.get("tripping", 4))):
            try:
                session.get(url, timeout=timeout)
                key = "ok"
            except Exception as exc:  # the outcome is the result
                key = type(exc).__name__
            outcomes[key] = outcomes.get(key, 0) + 1
        fault_time["tripping"] = outcomes
        created = []

        def audit(event: str, args: Any) -> None:
            if event in ("socket.__new__", "socket.connect"):
                created.append(event)

        sys.addaudithook(audit)
        latencies = []
        open_errors = 0
        for _ in range(int(params.get("fast", 1000))):
            start = time.perf_counter()
            try:
                session.get(url, timeout=timeout)
            except CircuitOpenError:
                open_errors += 1
            latencies.append(time.perf_counter() - start)
        fault_time["open_errors"] = open_errors
        fault_time["fast_p99_s"] = percentile(latencies, 0.99)
        fault_time["sockets_touched"] = len(created)
    elif scenario == "slow":
        for _ in range(int(params.get("requests", 2))):
            one()
    elif scenario in ("loss", "lossy_slow", "lossy_stream"):
        netns.add_random_loss(server.port, int(params.get("loss_percent", 3)))
        n_threads = int(params.get("threads", 1))
        per_thread = int(params.get("requests", 50)) // n_threads
        chunk_pause = float(params.get("chunk_pause", 0.002))

        def download() -> None:
            start = time.monotonic()
            err = None
            size = 0
            try:
                with session.get(url, timeout=timeout, stream=True) as r:
                    for chunk in r.iter_content(65536):
                        size += len(chunk)
                        time.sleep(chunk_pause)  # a slow reader
                ok = r.status_code == 200 and size == len(body)
            except Exception as exc:
                ok = False
                err = f"{type(exc).__name__}: {exc}"[:300]
            record(start, ok, err)

        def batch() -> None:
            for _ in range(per_thread):
                (download if scenario == "lossy_stream" else one)()

        threads = [threading.Thread(target=batch) for _ in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        fault_time["dropped_packets"] = sum(netns.loss_counters())
        fault_time["server_hits"] = len(server.requests)
        netns.clear_random_loss()
    elif scenario == "post_sibling":
        # Two pooled connections: one for the POST, one for the GET.
        warm = [threading.Thread(target=one) for _ in range(2)]
        for t in warm:
            t.start()
        for t in warm:
            t.join()
        outcome: Dict[str, Any] = {}

        def post() -> None:
            start = time.monotonic()
            try:
                session.post(url, data=b"once", headers={"X-Request-Id": "p1"}, timeout=timeout)
                outcome["post"] = "ok"
            except Exception as exc:
                outcome["post"] = type(exc).__name__
            outcome["post_s"] = time.monotonic() - start

        poster = threading.Thread(target=post)
        poster.start()
        if not posted.wait(10):
            raise SystemExit("the POST never reached the server")
        fault_time["t"] = time.monotonic() - t0
        fault_time["flows"] = netns.blackhole_port(server.port)
        one()  # a GET on the other pooled flow: its verdict condemns the peer
        poster.join()
        fault_time.update(outcome)
        fault_time["delivered_p1"] = sum(
            1 for q in server.requests if q.headers.get("x-request-id") == "p1"
        )
    elif scenario == "lone":
        if params.get("loss_percent"):
            faulted.set()  # no black hole: only the loss
            netns.add_random_loss(server.port, int(params["loss_percent"]))
            for _ in range(int(params.get("requests", 8))):
                one()
            fault_time["dropped_packets"] = sum(netns.loss_counters())
            netns.clear_random_loss()
        else:
            one()  # a pooled connection, idle
            worker_thread = threading.Thread(target=one)
            worker_thread.start()
            if not got_first.wait(10):
                raise SystemExit("the request never reached the server")
            # The server's kernel acknowledges the request within its delayed
            # ACK (at most 200 ms on Linux): only then is nothing of ours
            # unacknowledged, the case the probes are for.
            time.sleep(0.3)
            fault_time["t"] = time.monotonic() - t0
            fault_time["flows"] = netns.blackhole_port(server.port)
            faulted.set()
            worker_thread.join()
            fault_time["server_hits"] = len(server.requests)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    server.close()

    after = [r for r in results if "t" in fault_time and r["end"] >= fault_time["t"]]
    stalls = [r["end"] - r["start"] for r in results]
    return {
        "scenario": scenario,
        "requests": len(results),
        "failed": sum(1 for r in results if not r["ok"]),
        "errors": sorted({r["error"] for r in results if r["error"]}),
        "fault": fault_time,
        "after_fault": len(after),
        "p99_after_s": percentile([r["end"] - r["start"] for r in after], 0.99),
        "max_s": max(stalls) if stalls else 0.0,
        "counts": counter.counts,
        "accepted_connections": server.accepted,
        "results": results if params.get("keep_results") else [],
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
