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

from types import TracebackType
from typing import Any, Dict, Final, NamedTuple, Optional

from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from ._config import RETRY_NON_IDEMPOTENT_MODES
from ._errors import ConfigError
from ._failure import failure_of, unattached
from ._instrument import hooks
from ._log import log_decision
from ._policy import Decision, is_body_error

__all__ = ["AzRetry", "ReplayFacts", "replay_reason"]

IDEMPOTENCY_HEADERS: Final = ("idempotency-key", "x-idempotency-key")

_METHOD_RETRYABLE: Final = Retry._is_method_retryable


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
        # (urllib3 asks on every response: no super() object.)
        return self._azguard_force or _METHOD_RETRYABLE(self, method)

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
        try:
            return self._azguard_increment(method, url, response, error, _pool, _stacktrace)
        except Exception as final:
            earlier = self._azguard_earlier_body_error(error)
            if earlier is None:
                raise
            # The body broke, the guard replayed the request, and the replay
            # failed otherwise (the server went away meanwhile): plain
            # requests, which does not replay, reports the broken body
            # (ChunkedEncodingError), so that is what surfaces, with the
            # replay's failure as its cause.
            raise earlier from final

    def _azguard_earlier_body_error(self, error: Exception) -> Optional[Exception]:
        if is_body_error(error):
            return None
        for attempt in self.history:
            if attempt.error is not None and is_body_error(attempt.error):
                return attempt.error
        return None

    def _azguard_increment(
        self,
        method: Optional[str],
        url: Optional[str],
        response: Any,
        error: Exception,
        _pool: Any,
        _stacktrace: Optional[TracebackType],
    ) -> AzRetry:
        # Judged by the connection where it failed (_connection); a failure
        # before any guarded connection was involved is judged from its type.
        failure = failure_of(error) or unattached(error)
        idempotent = method is not None and self.azguard_idempotent(method)
        facts = ReplayFacts(
            idempotent,
            failure.nothing_written,
            failure.idempotency_key,
            failure.body_replayable,
        )
        reason = replay_reason(failure.decision, facts, self.azguard_mode)
        if reason is not None and failure.kind == "condemned_inflight":
            reason = failure.kind  # counted apart: the rescue of a sibling's verdict
        host = failure.host or str(url)
        log_decision(
            "retry" if reason else "error",
            host=host,
            reason=reason or failure.kind,
            peer=failure.peer,
            errno=failure.errno_name,
            method=method,
            failure=failure.kind,
            blame=failure.blame,
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
        if failure.host:
            hooks().retry(failure.host, reason)
        if facts.idempotent:
            return super().increment(method, url, response, error, _pool, _stacktrace)
        forced = self.new()
        forced._azguard_force = True
        return Retry.increment(forced, method, url, response, error, _pool, _stacktrace)
