"""Failure rows that need a private network namespace, classified end to end.

Prints one JSON object: row name -> [kind, errno name] as classify() saw them.
ICMP unreachables come from nftables reject rules on loopback; the DNS failure
comes from a namespace that has no route to any resolver, so nothing leaves it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from requests_azguard.tools import netns

netns.enter_private_netns()

import requests  # noqa: E402
from servers import free_port  # noqa: E402

import requests_azguard  # noqa: E402
from requests_azguard._policy import classify  # noqa: E402


def fail(url: str) -> list:
    s = requests_azguard.mount(
        requests.Session(), requests_azguard.GuardConfig(retries=0, breaker=False)
    )
    try:
        s.get(url, timeout=(2, 2))
    except requests.RequestException as exc:
        c = classify(exc)
        return [c.kind, c.errno_name, c.decision.fail_fast, c.decision.blame]
    return ["no error", None, False, False]


out = {}
for row, icmp in (("EHOSTUNREACH", "host-unreachable"), ("ENETUNREACH", "net-unreachable")):
    port = free_port()
    subprocess.run(
        ["nft", "add", "rule", "inet", "azguard_chaos", "output", "ip", "daddr", "127.0.0.1",
         "tcp", "dport", str(port), "reject", "with", "icmp", "type", icmp],
        check=True,
    )  # fmt: skip
    out[row] = fail(f"http://127.0.0.1:{port}/")
out["dns"] = fail("http://azguard-test.invalid/")
print(json.dumps(out))
