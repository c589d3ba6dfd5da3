"""boto3 under a conntrack migration, in its own process and private network namespace.

    python tests/scenarios/boto3_load.py '{"threads": 4, "duration": 6, ...}'

moto's S3 (its WSGI application, served by waitress, which keeps connections
alive) listens on 127.0.0.1 inside the namespace; N threads share one S3
client and loop put_object/get_object; mid-run every existing flow to the
server is black-holed (``conntrack -D`` with ``ct state invalid drop``).

Whether the client is guarded is decided by the environment alone: run with
``AZGUARD_AUTO=1`` for the guarded side (the start-up hook, no code change)
and without it for plain boto3.  Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from requests_azguard.tools import netns  # noqa: E402

# Must run before any thread exists (the namespace switch is per thread).
netns.enter_private_netns()

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from sdk_servers import moto_s3  # noqa: E402


def percentile(values: List[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(params: Dict[str, Any]) -> Dict[str, Any]:
    threads = int(params.get("threads", 4))
    retries = params.get("retries", {"mode": "standard", "max_attempts": 3})
    config = Config(
        connect_timeout=float(params.get("connect_timeout", 2)),
        read_timeout=float(params.get("read_timeout", 5)),
        retries=retries,
        max_pool_connections=threads,
    )
    results: List[Dict[str, Any]] = []
    lock = threading.Lock()
    fault: Dict[str, Any] = {}
    with moto_s3() as url:
        port = int(url.rsplit(":", 1)[1])
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
        )
        s3.create_bucket(Bucket="load")
        t0 = time.monotonic()
        stop_at = t0 + float(params.get("duration", 6.0))
        fault_at = t0 + float(params.get("fault_after", 1.5))
        interval = float(params.get("interval", 0.05))

        def one(op: str, key: str) -> None:
            start = time.monotonic()
            err = None
            attempts = 0
            # "body": the caller's own read of get_object's StreamingBody,
            # after botocore returned: a stream nothing may replay (for plain
            # boto3 and the guard alike), kept apart from the requests.
            phase = "request"
            try:
                if op == "put":
                    r = s3.put_object(Bucket="load", Key=key, Body=key.encode() * 20)
                    ok = r["ResponseMetadata"]["HTTPStatusCode"] == 200
                else:
                    r = s3.get_object(Bucket="load", Key=key)
                    phase = "body"
                    ok = r["Body"].read() == key.encode() * 20
                attempts = 1 + int(r["ResponseMetadata"].get("RetryAttempts", 0))
            except Exception as exc:  # the outcome is the result
                ok = False
                err = f"{type(exc).__name__}: {exc}"[:300]
            end = time.monotonic()
            with lock:
                results.append(
                    {
                        "op": op,
                        "start": start - t0,
                        "end": end - t0,
                        "ok": ok,
                        "error": err,
                        "attempts": attempts,
                        "phase": phase,
                    }
                )

        def worker(n: int) -> None:
            i = 0
            while time.monotonic() < stop_at:
                key = f"t{n}-{i}"
                one("put", key)
                one("get", key)
                i += 1
                time.sleep(interval)

        workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for t in workers:
            t.start()
        time.sleep(max(0.0, fault_at - time.monotonic()))
        fault["t"] = time.monotonic() - t0
        fault["flows"] = netns.blackhole_port(port)
        for t in workers:
            t.join()
        manager = s3._endpoint.http_session._manager
        guarded = type(manager).__module__.startswith("requests_azguard")

    after = [r for r in results if r["end"] >= fault["t"]]
    stalls = [r["end"] - r["start"] for r in results]
    body_lost = [r for r in results if not r["ok"] and r["phase"] == "body"]
    requests_only = [r["end"] - r["start"] for r in results if r not in body_lost]
    return {
        "guarded": guarded,
        "manager": f"{type(manager).__module__}.{type(manager).__name__}",
        "requests": len(results),
        "failed": sum(1 for r in results if not r["ok"]),
        # lost while the caller read a response body botocore had handed over
        "failed_in_body_read": len(body_lost),
        "max_request_s": max(requests_only) if requests_only else 0.0,
        "errors": sorted({r["error"] for r in results if r["error"]}),
        "fault": fault,
        "after_fault": len(after),
        "stalled_over_1s": sum(1 for s in stalls if s > 1.0),
        "botocore_retries": sum(max(0, r["attempts"] - 1) for r in results),
        "p50_s": percentile(stalls, 0.5),
        "p99_s": percentile(stalls, 0.99),
        "max_s": max(stalls) if stalls else 0.0,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
