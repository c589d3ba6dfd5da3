"""Condemnation: once one flow to a peer is judged dead, older ones are too.

A silent path change (NIC migration, a NAT or conntrack forgetting flows)
kills every flow to the peer that existed at that moment, but each idle
connection would otherwise have to time out on its own, one request at a time,
and urllib3's retry would land on the next dead sibling.  The registry is
process-wide because pools are per Session and per adapter while the network
path is shared by all of them.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, Final, Hashable, Optional

__all__ = ["condemn", "condemned_at", "reset_condemnations"]

# Peers are few; the cap only stops a pathological client from growing the
# dict without bound.  The oldest verdicts go first: they are the least likely
# to still cover a live connection.
_MAX_PEERS: Final = 4096

_lock = threading.Lock()
_condemned: Dict[Hashable, float] = {}


def condemn(peer: Hashable, now: float) -> None:
    """Mark every connection to ``peer`` opened before ``now`` as dead."""
    with _lock:
        previous = _condemned.pop(peer, None)
        _condemned[peer] = now if previous is None else max(previous, now)
        while len(_condemned) > _MAX_PEERS:
            del _condemned[next(iter(_condemned))]


#: ``condemned_at(peer)``: when ``peer`` was last condemned (monotonic
#: seconds), or None.  The dict's own ``get``: a read is atomic under the GIL,
#: and this runs before every reuse, where a Python frame costs.
condemned_at: Callable[[Hashable], Optional[float]] = _condemned.get


def reset_condemnations() -> None:
    """Tests: forget every verdict."""
    with _lock:
        _condemned.clear()
