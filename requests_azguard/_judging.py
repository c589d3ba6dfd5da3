"""Judging a failure at the connection that saw it: evidence in, actions out.

``_failure.judge`` decides, and is pure.  Around it, at the edges, this
module gathers the evidence while the socket is still open (``TCP_INFO``, and
one liveness probe when a read timeout would otherwise blame the host),
attaches the judgement to the exception once, and takes the actions that
follow for the connection's peer once: a condemnation, the rescue of the
requests still in flight on older flows to it, events and logs.  The retry
and the breaker only read the judgement (``_failure.failure_of``).
"""

from __future__ import annotations

import time
from typing import Any, Optional, Protocol

from . import _watchdog
from ._condemn import condemn, condemned_at
from ._config import GuardConfig
from ._failure import ConnFacts, Failure, FlowEvidence, judge
from ._instrument import hooks
from ._log import log_decision
from ._policy import classify
from ._tcpinfo import answer_time, answers_probe, read_vitals
from ._validation import Peer

__all__ = ["Witness", "judge_at"]

_TIMEOUT_KINDS = ("read_timeout", "body_timeout")


class Witness(Protocol):
    """What judging needs from the connection that saw the failure
    (``_connection.GuardedConnection``)."""

    sock: Any
    azguard_config: Optional[GuardConfig]
    azguard_raw: Any
    azguard_peer: Optional[Peer]
    azguard_host_label: str
    azguard_fresh: bool
    azguard_via_proxy: bool
    azguard_verdict: Optional[str]
    azguard_opened_at: Optional[float]
    azguard_idempotency_key: bool
    azguard_body_replayable: bool

    @property
    def azguard_nothing_written(self) -> bool: ...


def judge_at(conn: Witness, exc: BaseException, phase: str) -> None:
    """Judge ``exc``, seen by ``conn`` in ``phase``, and attach the judgement
    (``exc.azguard_failure``); nothing if a guarded connection judged it
    already (a ``connect()`` inside ``send()``)."""
    if exc.__dict__.get("azguard_failure") is not None:
        return
    config = conn.azguard_config
    if config is None:
        return
    classified = classify(exc, config.policy)
    peer = conn.azguard_peer
    evidence = FlowEvidence()
    if classified.kind in _TIMEOUT_KINDS and conn.sock is not None:
        evidence = _flow_evidence(conn, config)
    failure = judge(
        classified,
        ConnFacts(
            host=conn.azguard_host_label,
            peer=peer,
            phase=phase,
            fresh=conn.azguard_fresh,
            via_proxy=conn.azguard_via_proxy,
            verdict=conn.azguard_verdict,
            opened_at=conn.azguard_opened_at,
            condemned_at=None if peer is None else condemned_at(peer),
            nothing_written=conn.azguard_nothing_written,
            idempotency_key=conn.azguard_idempotency_key,
            body_replayable=conn.azguard_body_replayable,
        ),
        evidence,
        config.policy,
    )
    try:
        exc.azguard_failure = failure  # type: ignore[attr-defined]
    except AttributeError:
        return  # an exception type without a __dict__: judged from its type
    _act(conn, failure)


def _flow_evidence(conn: Witness, config: GuardConfig) -> FlowEvidence:
    raw = conn.azguard_raw
    vitals = read_vitals(raw)
    if vitals is None:
        return FlowEvidence()
    if vitals.unacked or vitals.probes or not config.breaker:
        # Dead flow already shown, or no breaker to spare a wrong count.
        return FlowEvidence(vitals.unacked, vitals.probes)
    peer = conn.azguard_peer
    opened = conn.azguard_opened_at
    seen = None if peer is None else condemned_at(peer)
    if seen is not None and opened is not None and seen >= opened:
        return FlowEvidence()  # condemned since it opened: dead already
    # Only a timeout the breaker would otherwise count against the host
    # pays for this wait.
    return FlowEvidence(0, 0, answers_probe(raw, answer_time(vitals.rtt, vitals.rttvar)))


def _act(conn: Witness, failure: Failure) -> None:
    host = failure.host
    instrumentation = hooks()
    if failure.dead_flow == "blackhole":
        instrumentation.blackhole(host)
        log_decision("blackhole", host=host, peer=failure.peer, errno=failure.errno_name)
    instrumentation.error(host, failure.errno_name or failure.kind)
    if failure.decision.evict and conn.sock is not None:
        instrumentation.connection_evicted(host, failure.kind)
    peer = failure.peer
    if failure.decision.condemn and peer is not None:
        now = time.monotonic()
        seen = condemned_at(peer)
        opened = conn.azguard_opened_at
        if seen is None or opened is None or seen < opened:
            # A new event; a flow opened before the last condemnation died
            # in the same one and is only counted (as its verdict).
            condemn(peer, now)
            instrumentation.condemned(host, 1)
            log_decision("condemn", host=host, peer=peer, reason=failure.kind)
            seen = now
        # Requests still waiting on older flows to this peer are replayed
        # now instead of each reaching its own verdict.
        _watchdog.abort_inflight(peer, seen, "condemned_inflight")
