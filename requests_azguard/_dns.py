"""DNS drift: is the peer a pooled connection reached still in the host's answer?

When a service moves (blue/green, failover, a load balancer replaced) its name
points elsewhere while pooled connections keep talking to the old address
for as long as it answers.  Each host is re-resolved at most once per
``AZGUARD_DNS_RECHECK`` interval; the answer is cached process-wide.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, Dict, Final, FrozenSet, List, Optional, Tuple

__all__ = ["MAX_HOSTS", "DnsCache", "default_cache"]

#: Hosts remembered, like the breaker registry's bound: a client calling ever
#: new hosts must not grow the cache without limit.  The least recently
#: resolved go first; losing one costs one extra lookup, never a wrong answer.
MAX_HOSTS: Final = 4096

Resolver = Callable[[str, int], List[Tuple[object, ...]]]


def _resolve(host: str, port: int) -> List[Tuple[object, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)  # type: ignore[return-value]


class DnsCache:
    """Addresses per (host, port), refreshed at most every ``interval`` seconds."""

    def __init__(self, resolver: Resolver = _resolve, max_hosts: int = MAX_HOSTS) -> None:
        self._resolver = resolver
        self.max_hosts = max_hosts
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
            answers = self._answers
            answers.pop(key, None)  # re-inserted last: oldest lookups stay first
            answers[key] = (now, answer)
            while len(answers) > self.max_hosts:
                del answers[next(iter(answers))]
        return answer

    def __len__(self) -> int:
        return len(self._answers)

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's may have been held by
        another thread at fork) and no answers (they are re-resolved)."""
        self._lock = threading.Lock()
        self._answers = {}


default_cache = DnsCache()
