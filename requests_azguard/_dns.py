"""DNS drift: is the peer a pooled connection reached still in the host's answer?

When a service moves (blue/green, failover, a load balancer replaced) its name
points elsewhere while pooled connections keep talking to the old address
for as long as it answers.  Each host is re-resolved at most once per
``AZGUARD_DNS_RECHECK`` interval; the answer is cached process-wide.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

__all__ = ["DnsCache", "default_cache"]

Resolver = Callable[[str, int], List[Tuple[object, ...]]]


def _resolve(host: str, port: int) -> List[Tuple[object, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)  # type: ignore[return-value]


class DnsCache:
    """Addresses per (host, port), refreshed at most every ``interval`` seconds."""

    def __init__(self, resolver: Resolver = _resolve) -> None:
        self._resolver = resolver
        self._lock = threading.Lock()
        self._answers: Dict[Tuple[str, int], Tuple[float, FrozenSet[str]]] = {}

    def addresses(
        self, host: str, port: int, now: float, interval: float
    ) -> Optional[FrozenSet[str]]:
        """The current addresses of ``host``, or None when resolution fails
        (a failed lookup says nothing about the pooled connection: keep it)."""
        key = (host, port)
        cached = self._answers.get(key)
        if cached is not None and now - cached[0] < interval:
            return cached[1]
        try:
            infos = self._resolver(host, port)
        except OSError:
            return cached[1] if cached is not None else None
        answer = frozenset(str(info[4][0]) for info in infos)  # type: ignore[index]
        # The lookup ran without the lock held: it is network I/O.
        with self._lock:
            self._answers[key] = (now, answer)
        return answer

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()


default_cache = DnsCache()
