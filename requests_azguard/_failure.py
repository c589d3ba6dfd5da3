"""One failure, judged once where it is first seen: what it was and whom it blames.

A connection that fails (connecting, writing the request, reading the answer)
knows things no wrapper around it can recover later: whether it was fresh or
pooled, whether it went through a proxy, how much of the request reached the
kernel, whether its peer has been condemned since it opened, and what the
kernel's ``TCP_INFO`` says about the flow.  ``judge`` turns the classified
exception and those facts into a :class:`Failure` (a pure function, no I/O);
the connection attaches it to the exception it raises, and everything above
(the retry rule, the breaker, the adapter's error mapping) reads it back with
:func:`failure_of` instead of reaching down into the pool.

Whom a failure blames is the breaker's evidence:

* ``FLOW``: the path under one flow died (black-hole verdict, a dead-flow
  errno, a reset on a *pooled* connection, a read timeout on a flow whose peer
  was condemned since it opened or whose TCP no longer answers): nobody's
  breaker counts it, since new flows to the same host work.
* ``PROXY``: the proxy could not be reached or could not open the tunnel.
* ``HOST``: a fresh connection refused, timed out or reset, a configured
  status, a read timeout on a flow whose TCP is alive (a wedged or slow host).
* ``NOBODY`` (``_policy.NOBODY``): the failure says nothing about a host (an undecodable body).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple, Optional, Tuple

from ._policy import (
    CONNECTION,
    FLOW,
    HOST,
    PROXY,
    Classified,
    Decision,
    Policy,
    classify,
    decision_for,
    iter_chain,
)

#: The peer address fingerprint taken at connect (see _validation.Peer).
Peer = Tuple[Any, ...]

__all__ = [
    "CONNECT",
    "REQUEST",
    "RESPONSE",
    "ConnFacts",
    "Failure",
    "FlowEvidence",
    "blame_of",
    "failure_of",
    "judge",
    "unattached",
]

#: Phases of one attempt on one connection.
CONNECT: Final = "connect"  # TCP connect, TLS, a proxy's CONNECT tunnel
REQUEST: Final = "request"  # writing the request
RESPONSE: Final = "response"  # waiting for and reading the answer

_TIMEOUT_KINDS: Final = ("read_timeout", "body_timeout")


class ConnFacts(NamedTuple):
    """What the failing connection knew about itself and its request."""

    host: str  # scheme://host:port of its pool
    peer: Optional[Peer]  # the peer address fingerprint taken at connect
    phase: str  # CONNECT, REQUEST or RESPONSE
    fresh: bool  # connected during this attempt (not taken from the pool)
    via_proxy: bool  # its pool goes through a proxy
    verdict: Optional[str]  # why the watchdog aborted the request, if it did
    opened_at: Optional[float]  # monotonic time it connected
    condemned_at: Optional[float]  # monotonic time its peer was last condemned
    nothing_written: bool  # not one byte of the request reached the kernel
    idempotency_key: bool
    body_replayable: bool


class FlowEvidence(NamedTuple):
    """What the kernel said about the flow when a timeout fired (Linux)."""

    unacked: int = 0  # segments of ours the peer never acknowledged
    probes: int = 0  # keepalive probes it never answered
    #: Did the peer's TCP answer a probe sent just now (None: not asked).
    answers: Optional[bool] = None


class Failure(NamedTuple):
    """One judged failure (see the module docstring)."""

    kind: str  # the policy row
    errno_name: Optional[str]
    decision: Decision
    blame: str  # HOST, PROXY, FLOW or NOBODY
    #: Why the flow was judged dead, if it was: "blackhole", "condemned",
    #: "unanswered" (a read timeout whose probe went unanswered) or None.
    dead_flow: Optional[str]
    host: str
    peer: Optional[Peer]
    fresh: bool
    nothing_written: bool
    idempotency_key: bool
    body_replayable: bool


def judge(
    classified: Classified,
    facts: ConnFacts,
    evidence: FlowEvidence,
    policy: Optional[Policy] = None,
) -> Failure:
    """The failure's row, verdict and blame, from facts gathered by the connection
    (``policy``: the config's rows, if it has its own)."""
    kind, decision = classified.kind, classified.decision
    dead_flow: Optional[str] = None
    if facts.verdict is not None:
        # The watchdog ended the request on purpose; whatever the read then
        # raised (EOF, a reset) is that verdict.
        kind, decision, dead_flow = (
            facts.verdict,
            decision_for(facts.verdict, policy),
            facts.verdict,
        )
    elif kind in _TIMEOUT_KINDS and (evidence.unacked > 0 or evidence.probes > 0):
        # The caller's timeout fired while data or probes were outstanding:
        # the peer's TCP is gone, which a slow server's TCP never is.
        kind, decision, dead_flow = "blackhole", decision_for("blackhole", policy), "blackhole"
    blame = decision.blame
    if facts.via_proxy and facts.phase == CONNECT:
        blame = PROXY
    elif blame == CONNECTION:
        blame = HOST if facts.fresh else FLOW
    elif blame == HOST and kind in _TIMEOUT_KINDS:
        if (
            facts.condemned_at is not None
            and facts.opened_at is not None
            and facts.condemned_at >= facts.opened_at
        ):
            blame, dead_flow = FLOW, "condemned"
        elif evidence.answers is False:
            blame, dead_flow = FLOW, "unanswered"
    if blame == FLOW and dead_flow is None:
        dead_flow = kind
    return Failure(
        kind,
        classified.errno_name,
        decision,
        blame,
        dead_flow,
        facts.host,
        facts.peer,
        facts.fresh,
        facts.nothing_written,
        facts.idempotency_key,
        facts.body_replayable,
    )


def unattached(exc: BaseException) -> Failure:
    """A failure no guarded connection saw (judged from the exception alone).

    Without the connection's facts a request is taken as not replayable
    unless urllib3's own rule allows it, and a reset as coming from a fresh
    connection (the breaker counts it, as it would without evidence).
    """
    classified = classify(exc)
    blame = classified.decision.blame
    if blame == CONNECTION:
        blame = HOST
    return Failure(
        classified.kind,
        classified.errno_name,
        classified.decision,
        blame,
        classified.kind if blame == FLOW else None,
        "",
        None,
        True,
        False,
        False,
        False,
    )


def failure_of(exc: BaseException) -> Optional[Failure]:
    """The judgement a guarded connection attached to ``exc`` or to an
    exception it wraps, or None."""
    for item in iter_chain(exc):
        found = item.__dict__.get("azguard_failure") if hasattr(item, "__dict__") else None
        if isinstance(found, Failure):
            return found
    return None


def blame_of(exc: BaseException) -> str:
    """Whom ``exc`` blames: HOST, PROXY, FLOW or NOBODY."""
    failure = failure_of(exc)
    return (failure or unattached(exc)).blame
