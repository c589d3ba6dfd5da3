"""Kernel fault injection in a private network namespace (Linux, root).

This is the reproduction the project is built around: with
``nf_conntrack_tcp_loose=0`` and an nftables rule dropping ``ct state
invalid``, deleting a flow's conntrack entry (``conntrack -D``) makes the
kernel drop every later packet of that flow silently, exactly as when a cloud
NIC is hot-migrated or a NAT forgets a flow, while new flows still work.

Everything happens inside a network namespace private to the calling process,
which only has a loopback interface: nothing here can reach another host.
Used by ``azguard drill --fault blackhole`` and by the chaos tests.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from typing import Final, List, Optional

__all__ = [
    "add_random_loss",
    "blackhole_port",
    "clear_random_loss",
    "drop_port",
    "enter_private_netns",
    "unavailable_reason",
]

_CLONE_NEWNET: Final = 0x40000000
_TABLE: Final = "azguard_chaos"
_TOOLS: Final = ("nft", "conntrack", "ip")


def unavailable_reason() -> Optional[str]:
    """Why black-hole injection cannot run here, or None if it can."""
    if not os.path.exists("/proc/sys/net"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (a private network namespace, nftables and conntrack)"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return (
            "missing kernel tools: "
            + ", ".join(missing)
            + " (Debian: nftables, conntrack, iproute2)"
        )
    return None


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def enter_private_netns() -> None:
    """Move this process into a new network namespace with only loopback up,
    conntrack strict, and invalid packets dropped.

    Call it before starting any thread: a namespace switch applies to the
    calling thread, and threads started later inherit it.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise OSError(reason)
    if threading.active_count() != 1:
        raise RuntimeError("enter_private_netns() must run before any other thread starts")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}")
    _run("ip", "link", "set", "lo", "up")
    ruleset = f"""
table inet {_TABLE} {{
    chain input {{
        type filter hook input priority 0; policy accept;
        ct state invalid drop
    }}
    chain output {{
        type filter hook output priority 0; policy accept;
        ct state invalid drop
    }}
}}
"""
    proc = subprocess.run(
        ["nft", "-f", "-"], input=ruleset, capture_output=True, text=True, timeout=20
    )
    if proc.returncode != 0:
        raise OSError(f"nft -f failed: {proc.stderr.strip()}")
    # Only after the ct rule loaded nf_conntrack does this per-namespace
    # sysctl exist.  With loose=1 the kernel would re-adopt a forgotten flow
    # mid-stream instead of treating its packets as invalid.
    with open("/proc/sys/net/netfilter/nf_conntrack_tcp_loose", "w") as f:
        f.write("0")


def blackhole_port(port: int) -> int:
    """Forget every conntrack entry of TCP flows to ``port``; returns how many.

    Every existing flow to ``port`` is black-holed from then on; new flows work.
    """
    proc = subprocess.run(
        ["conntrack", "-D", "-p", "tcp", "--dport", str(int(port))],
        capture_output=True,
        text=True,
        timeout=20,
    )
    # conntrack exits 1 when nothing matched; that is not an error here.
    for line in proc.stderr.splitlines():
        if "flow entries have been deleted" in line:
            return int(line.split("(conntrack-tools):")[-1].split()[0])
    if proc.returncode not in (0, 1):
        raise OSError(f"conntrack -D failed: {proc.stderr.strip()}")
    return 0


def add_random_loss(port: int, percent: int) -> None:
    """Drop ``percent`` % of the packets to and from ``port``, at random."""
    if not 0 < percent < 100:
        raise ValueError(f"percent={percent!r}: expected 1 to 99")
    # On loopback every packet passes the input hook once, so one rule per
    # direction on input gives the requested loss rate each way.
    for match in (f"tcp dport {int(port)}", f"tcp sport {int(port)}"):
        _run(
            "nft", "add", "rule", "inet", _TABLE, "input",
            *match.split(), "numgen", "random", "mod", "100", "<", str(int(percent)),
            "counter", "drop",
        )  # fmt: skip


def drop_port(port: int) -> None:
    """Drop every packet to ``port``, new flows included: a host that vanished."""
    _run("nft", "add", "rule", "inet", _TABLE, "input", "tcp", "dport", str(int(port)), "drop")


def clear_random_loss() -> None:
    _run("nft", "flush", "chain", "inet", _TABLE, "input")
    _run("nft", "add", "rule", "inet", _TABLE, "input", "ct", "state", "invalid", "drop")


def loss_counters() -> List[int]:
    """Packets dropped by the random-loss rules so far (one count per rule)."""
    proc = subprocess.run(
        ["nft", "list", "chain", "inet", _TABLE, "input"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    counts = []
    for line in proc.stdout.splitlines():
        if "numgen" in line and "packets" in line:
            counts.append(int(line.split("packets")[1].split()[0]))
    return counts
