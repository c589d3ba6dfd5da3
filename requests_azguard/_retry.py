"""Retries that are safe by construction, built on urllib3's ``Retry``.

There is one retry loop: urllib3's.  ``AzRetry`` is a ``Retry`` (immutable,
``new()``/``increment()``) whose ``increment`` first acts on the failure
policy (evict, condemn, report) and then replays a request only when that is
safe:

* the method is idempotent (``allowed_methods``, urllib3's default set), or
* the request carries an ``Idempotency-Key`` / ``X-Idempotency-Key`` header, or
* not one byte of it reached the kernel (Go's "nothing written" rule) and the
  mode is ``unsent`` (the default), or the mode is ``always`` (opt-in);

and its body can be sent again (bytes, or a file urllib3 can rewind), unless
nothing of it was sent yet.  A POST is never sent twice unless the user opts in.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Dict, Final, NamedTuple, Optional

from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from ._condemn import condemn
from ._config import RETRY_NON_IDEMPOTENT_MODES
from ._errors import ConfigError
from ._instrument import hooks
from ._log import log_decision
from ._policy import Classified, Decision, classify, decision_for
from ._tcpinfo import read_vitals

__all__ = ["AzRetry", "ReplayFacts", "replay_reason"]

IDEMPOTENCY_HEADERS: Final = ("idempotency-key", "x-idempotency-key")


class ReplayFacts(NamedTuple):
    """What is known about the failed attempt, gathered by the pool."""

    idempotent: bool  # the method is in the Retry's allowed set
    nothing_written: bool  # not one byte reached the kernel
    idempotency_key: bool
    body_replayable: bool


def replay_reason(decision: Decision, facts: ReplayFacts, mode: str) -> Optional[str]:
    """Why the request may be replayed on a fresh connection, or None if it may not."""
    if decision.fail_fast or not decision.retry:
        return None
    if not facts.body_replayable and not facts.nothing_written:
        return None
    if facts.idempotent:
        return "idempotent"
    if facts.idempotency_key:
        return "idempotency_key"
    if mode == "always":
        return "always"
    if mode == "unsent" and facts.nothing_written:
        return "unsent"
    return None


def _check_mode(mode: str) -> None:
    if mode not in RETRY_NON_IDEMPOTENT_MODES:
        raise ConfigError(
            "retry_non_idempotent", mode, "one of " + ", ".join(RETRY_NON_IDEMPOTENT_MODES)
        )


class AzRetry(Retry):
    """A ``Retry`` that knows the guard's replay rules (see module docstring)."""

    # Per instance, filled on first use; a Retry never changes once built.
    _azguard_methods: Optional[Dict[str, bool]] = None

    def __init__(self, *args: Any, azguard_mode: str = "unsent", **kwargs: Any) -> None:
        _check_mode(azguard_mode)
        super().__init__(*args, **kwargs)
        self.azguard_mode = azguard_mode
        self._azguard_force = False

    @classmethod
    def wrap(cls, retry: Retry, mode: str) -> AzRetry:
        """An ``AzRetry`` with every setting of ``retry`` (any urllib3 line)."""
        if isinstance(retry, AzRetry) and retry.azguard_mode == mode:
            return retry
        _check_mode(mode)
        wrapped = cls.__new__(cls)
        wrapped.__dict__.update(vars(retry))
        wrapped.azguard_mode = mode
        wrapped._azguard_force = False
        return wrapped

    def new(self, **kw: Any) -> AzRetry:
        kw.setdefault("azguard_mode", self.azguard_mode)
        return super().new(**kw)

    def azguard_idempotent(self, method: str) -> bool:
        """Is ``method`` in this Retry's allowed set (cached: asked per request)."""
        cache = self._azguard_methods
        if cache is None:
            cache = self._azguard_methods = {}
        known: Optional[bool] = cache.get(method)
        if known is None:
            known = bool(Retry._is_method_retryable(self, method.upper()))
            if len(cache) < 64:  # methods are free-form strings: bounded
                cache[method] = known
        return known

    def _urllib3_refuses(self, method: Optional[str], error: Exception) -> bool:
        if self.total is False:
            return True
        if self._is_connection_error(error):
            return self.connect is False
        if self._is_read_error(error):
            return self.read is False or method is None or not self.azguard_idempotent(method)
        return False

    def _is_method_retryable(self, method: str) -> bool:
        # Forced only on the copy increment() makes once the guard's rules
        # found the replay safe (nothing written, idempotency key, "always").
        return self._azguard_force or super()._is_method_retryable(method)

    def increment(
        self,
        method: Optional[str] = None,
        url: Optional[str] = None,
        response: Any = None,
        error: Optional[Exception] = None,
        _pool: Any = None,
        _stacktrace: Optional[TracebackType] = None,
    ) -> AzRetry:
        if error is None:
            return super().increment(method, url, response, error, _pool, _stacktrace)
        attempt = getattr(_pool, "azguard_attempt", None)
        conn = attempt() if attempt is not None else None
        classified = classify(error)
        if conn is not None:
            classified = _act_on_failure(conn, classified, error)
        facts = _replay_facts(self, method, conn)
        reason = replay_reason(classified.decision, facts, self.azguard_mode)
        host = getattr(conn, "azguard_host_label", None) or str(url)
        log_decision(
            "retry" if reason else "error",
            host=host,
            reason=reason or classified.kind,
            peer=getattr(conn, "azguard_peer", None),
            errno=classified.errno_name,
            method=method,
            failure=classified.kind,
        )
        if reason is None:
            if self._urllib3_refuses(method, error):
                # urllib3 would not retry either: let it surface the error its way.
                return super().increment(method, url, response, error, _pool, _stacktrace)
            if self._is_read_error(error):
                # As urllib3 surfaces a read error it will not retry, so that
                # requests raises what it always did (ReadTimeout, ConnectionError).
                if _stacktrace is not None and error.__traceback__ is not _stacktrace:
                    raise error.with_traceback(_stacktrace)
                raise error
            # Otherwise end as an exhausted Retry ends, so that requests maps
            # it to the usual exception (ConnectionError, ConnectTimeout, SSLError).
            raise MaxRetryError(_pool, url, error) from error
        if conn is not None:
            hooks().retry(conn.azguard_host_label, reason)
        if facts.idempotent:
            return super().increment(method, url, response, error, _pool, _stacktrace)
        forced = self.new()
        forced._azguard_force = True
        return Retry.increment(forced, method, url, response, error, _pool, _stacktrace)


def _replay_facts(retry: AzRetry, method: Optional[str], conn: Any) -> ReplayFacts:
    idempotent = method is not None and retry.azguard_idempotent(method)
    if conn is None:
        # No guarded connection was involved (an error before one was taken):
        # only urllib3's own rule applies.
        return ReplayFacts(idempotent, False, False, False)
    return ReplayFacts(
        idempotent=idempotent,
        nothing_written=conn.azguard_nothing_written,
        idempotency_key=conn.azguard_idempotency_key,
        body_replayable=conn.azguard_body_replayable,
    )


def _act_on_failure(conn: Any, classified: Classified, error: Exception) -> Classified:
    """Judge, report and condemn; urllib3 closes the failed connection itself."""
    host = conn.azguard_host_label
    if _is_blackhole(conn, classified):
        classified = Classified("blackhole", classified.errno_name, decision_for("blackhole"))
        # Marked on the error so that classify() says so wherever it travels
        # (the breaker, the adapter raising BlackHoleError).
        error.azguard_blackhole = True  # type: ignore[attr-defined]
        hooks().blackhole(host)
        log_decision("blackhole", host=host, peer=conn.azguard_peer, errno=classified.errno_name)
    instrumentation = hooks()
    instrumentation.error(host, classified.errno_name or classified.kind)
    if classified.decision.evict and conn.sock is not None:
        instrumentation.connection_evicted(host, classified.kind)
    if classified.decision.condemn and conn.azguard_peer is not None:
        condemn(conn.azguard_peer, time.monotonic())
        instrumentation.condemned(host, 1)
        log_decision("condemn", host=host, peer=conn.azguard_peer, reason=classified.kind)
    return classified


def _is_blackhole(conn: Any, classified: Classified) -> bool:
    """Did the path under this flow die, rather than the server go quiet?"""
    if classified.kind == "ETIMEDOUT" and conn.azguard_tightened:
        # The kernel gave up on unacknowledged data or unanswered probes
        # within the in-flight bounds the watchdog set.
        return True
    if classified.kind == "read_timeout" and conn.sock is not None:
        # The caller's read timeout fired first (a request that could not be
        # replayed keeps the generous bounds).  The socket is still open:
        # if our own bytes are unacknowledged or probes unanswered, the peer's
        # TCP is gone, which a slow server's TCP never is.
        vitals = read_vitals(conn.azguard_raw)
        if vitals is not None and (vitals.unacked > 0 or vitals.probes > 0):
            return True
    return False
