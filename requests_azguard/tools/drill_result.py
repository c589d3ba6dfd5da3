"""What the drill measured: its options, each side's requests, and their summary."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Final, List, Optional, Sequence, Tuple

from .._config import GuardConfig
from .._policy import Policy

__all__ = [
    "DEAD_FLOW",
    "SIDE_FIELDS",
    "STUCK",
    "DrillOptions",
    "DrillResult",
    "Record",
    "SideResult",
]

#: The label of a request still in flight when the drill ended.
STUCK = "still waiting at the end of the drill"

# One request's outcome: (start, seconds from drill start; latency, seconds; error label or None).
Record = Tuple[float, float, Optional[str]]

#: Appended to the label of a failure the guard judged to be a dead flow.
DEAD_FLOW = " (dead flow)"


@dataclasses.dataclass(frozen=True)
class DrillOptions:
    fault: str = "reset"
    threads: int = 4
    duration: float = 10.0
    fault_at: Optional[float] = None  # None: a third of the way in
    method: str = "GET"
    timeout: Optional[Tuple[float, float]] = (2.0, 5.0)
    server_delay: float = 0.005

    @property
    def fault_time(self) -> float:
        return self.duration / 3.0 if self.fault_at is None else self.fault_at


@dataclasses.dataclass
class SideResult:
    records: List[Record]
    connections: int
    urllib3_retries: int
    retries_by_reason: Optional[Dict[str, int]]  # None: the side reports no guard events
    evictions_by_reason: Optional[Dict[str, int]]
    blackholes_detected: Optional[int]

    def retries(self) -> int:
        """Retries this side made: the guard's own reports where it made any,
        else what urllib3 recorded on the responses (both count one retry once)."""
        guard = sum((self.retries_by_reason or {}).values())
        return guard if guard else self.urllib3_retries

    def failures(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for _, _, err in self.records:
            if err is not None:
                out[err] = out.get(err, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary(self, fault_at: float) -> Dict[str, Any]:
        lat = sorted(r[1] for r in self.records)
        ok_lat = sorted(r[1] for r in self.records if r[2] is None)
        failed_lat = sorted(r[1] for r in self.records if r[2] is not None)
        after = [r for r in self.records if r[0] + r[1] >= fault_at]
        failures = self.failures()
        return {
            "requests": len(self.records),
            "ok": len(self.records) - sum(failures.values()),
            "failed": sum(failures.values()),
            "failures_by_error": failures,
            # failures the guard's evidence put on a dead flow, not on the host
            "dead_flow_failures": sum(n for k, n in failures.items() if k.endswith(DEAD_FLOW)),
            "circuit_open": sum(n for k, n in failures.items() if "CircuitOpenError" in k),
            "p50_ok_s": _percentile(ok_lat, 50),
            "p99_ok_s": _percentile(ok_lat, 99),
            "p50_failed_s": _percentile(failed_lat, 50),
            "p99_failed_s": _percentile(failed_lat, 99),
            "stuck": failures.get(STUCK, 0),
            "p50_s": _percentile(lat, 50),
            "p99_s": _percentile(lat, 99),
            "max_s": lat[-1] if lat else None,
            "max_after_fault_s": max((r[1] for r in after), default=None),
            "retries": self.retries(),
            "retries_by_reason": self.retries_by_reason,
            "urllib3_retries": self.urllib3_retries,
            "evictions": None
            if self.evictions_by_reason is None
            else sum(self.evictions_by_reason.values()),
            "evictions_by_reason": self.evictions_by_reason,
            "blackholes_detected": self.blackholes_detected,
            "connections": self.connections,
        }


#: What each field of a side (``plain``, ``guarded``) in ``--json`` means; a
#: test keeps it complete.  Durations are seconds; null where a side cannot
#: tell (plain requests reports no guard events).
SIDE_FIELDS: Final = {
    "requests": "requests completed (ok or failed)",
    "ok": "requests that got the expected answer",
    "failed": "requests that raised, got an error status or a wrong body",
    "failures_by_error": "failed requests by label: requests' exception (root cause)",
    "dead_flow_failures": "failures the guard judged to be dead flows (labels ending in '(dead flow)')",
    "circuit_open": "failures that were an open circuit breaker (CircuitOpenError)",
    "stuck": "requests still waiting at the end, counted as failed with their stall so far",
    "p50_s": "median latency of all requests, ok and failed",
    "p99_s": "99th percentile latency of all requests",
    "max_s": "the worst stall of any request",
    "p50_ok_s": "median latency of the successful requests",
    "p99_ok_s": "99th percentile latency of the successful requests",
    "p50_failed_s": "median latency of the failed requests (a fast failure is not a fast run)",
    "p99_failed_s": "99th percentile latency of the failed requests",
    "max_after_fault_s": "the worst stall of requests that ended after the fault",
    "retries": "replays this side made (the guard's reports, else urllib3's)",
    "retries_by_reason": "the guard's replays by reason (idempotent, unsent, condemned_inflight ...)",
    "urllib3_retries": "retries urllib3 recorded on the responses (Retry.history)",
    "evictions": "pooled connections the guard refused to reuse",
    "evictions_by_reason": "those evictions by reason (idle, peer_closed, condemned ...)",
    "blackholes_detected": "flows the guard judged black-holed",
    "connections": "connections this side opened to the drill's server",
}


@dataclasses.dataclass
class DrillResult:
    options: DrillOptions
    fault_at: float  # seconds from drill start when the fault was injected
    flows_hit: int
    plain: SideResult
    guarded: SideResult
    config: GuardConfig

    def to_json(self) -> Dict[str, Any]:
        o = self.options
        return {
            "fault": {
                "kind": o.fault,
                "at_s": round(self.fault_at, 3),
                "flows_hit": self.flows_hit,
            },
            "duration_s": o.duration,
            "threads": o.threads,
            "method": o.method,
            "timeout_s": None if o.timeout is None else list(o.timeout),
            "server_delay_s": o.server_delay,
            "guard_config": {
                k: _jsonable(v)
                for k, v in dataclasses.asdict(self.config).items()
                if k != "redis_url"
            },
            "plain": self.plain.summary(self.fault_at),
            "guarded": self.guarded.summary(self.fault_at),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Policy):
        return {kind: decision._asdict() for kind, decision in value.rows.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _percentile(sorted_values: Sequence[float], pct: float) -> Optional[float]:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]
