"""The failure policy: one table mapping a low-level failure to a decision.

A failure is first *classified* into a row name (an errno name such as
``ECONNRESET``, or a kind such as ``read_timeout``) by following the exception
chain that requests and urllib3 build (``requests`` -> ``MaxRetryError.reason``
-> ``ProtocolError.args`` -> ``OSError``), which differs between urllib3 1.26
and 2.x.  The row then says what to do; the code that acts on it (the pool,
the retry object, the breaker) never tests errnos itself.

Why the rows are what they are:

* A flow whose path died (``ETIMEDOUT`` from keepalive or ``TCP_USER_TIMEOUT``,
  ``EINVAL`` after a NIC hot-migration, a black-hole verdict, unreachable
  routes) says the same about every older flow to that peer: *condemn*.  It
  says nothing about the host, so it does not count for the breaker.
* A reset or close (``ECONNRESET``, ``EPIPE``, peer closed before answering,
  TLS EOF) is usually about one connection (idle close races, max requests
  per connection): evict it and retry on a fresh one, keep its siblings.
* A fresh connection that cannot be made (refused, DNS) will not be fixed by
  an immediate retry: *fail fast* and let the breaker count it.
* Whether a retry is *safe* is not decided here: see ``_retry.py``.
* Whom a failure *blames* (the breaker's evidence) starts from the row's
  ``blame`` and is settled by the failing connection's facts: see
  ``_failure.py``.
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
import threading
from types import MappingProxyType
from typing import Dict, Final, Iterator, Mapping, NamedTuple, Optional, Tuple

from urllib3 import exceptions as u3

from ._errors import ConfigError

__all__ = [
    "BLAMES",
    "CONNECTION",
    "DEFAULT_TABLE",
    "FLOW",
    "HOST",
    "NOBODY",
    "PROXY",
    "Classified",
    "Decision",
    "Policy",
    "classify",
    "decision_for",
    "is_body_error",
    "iter_chain",
    "reset_decisions",
    "root_cause",
    "set_decision",
]


#: Whom a failure blames (``Decision.blame`` and ``Failure.blame``).
HOST: Final = "host"  # the target host: counts toward its breaker
PROXY: Final = "proxy"  # the proxy in front of it: counts toward the proxy's breaker
FLOW: Final = "flow"  # one dead flow (the path, not the host): counts for nobody
NOBODY: Final = "nobody"  # says nothing about any host (e.g. a bad body encoding)
#: A row's blame that depends on the connection: a *fresh* connection failing
#: this way blames the host; a pooled one only says that flow died (an idle
#: close race, a forgotten NAT entry).  Unknown freshness counts as fresh.
CONNECTION: Final = "connection"
BLAMES: Final = (HOST, PROXY, FLOW, NOBODY, CONNECTION)


class Decision(NamedTuple):
    """What to do about one failure."""

    evict: bool = False  # close this connection, never reuse it
    condemn: bool = False  # older idle connections to the same peer are not reused
    retry: bool = False  # a fresh connection may succeed (safety is checked apart)
    blame: str = HOST  # whom the failure counts against (HOST, CONNECTION, FLOW, NOBODY)
    fail_fast: bool = False  # stop now: retrying cannot help
    timeout: bool = False  # a connect timeout: counts toward AZGUARD_TIMEOUT_FAIL_FAST


# A flow the path killed says nothing about the host (new flows work after a
# migration); the replay on a fresh connection, or its failure, does.
_DEAD_FLOW = Decision(evict=True, condemn=True, retry=True, blame=FLOW)
_ONE_CONN = Decision(evict=True, retry=True, blame=CONNECTION)
_NO_ROUTE = Decision(evict=True, condemn=True, blame=CONNECTION, fail_fast=True)
_CANNOT_CONNECT = Decision(blame=HOST, fail_fast=True)

#: The decision table.  Keys are errno names or failure kinds.
DEFAULT_TABLE: Final[Mapping[str, Decision]] = {
    # errnos seen on an established flow
    "EINVAL": _DEAD_FLOW,  # "read: invalid argument" after the path moved
    "ETIMEDOUT": _DEAD_FLOW,  # keepalive or TCP_USER_TIMEOUT gave up
    "ENOTCONN": _DEAD_FLOW,
    "blackhole": _DEAD_FLOW,  # the in-flight watchdog's verdict
    # a request the watchdog aborted because its peer was condemned: the
    # condemnation is done already, the request goes out again
    "condemned_inflight": Decision(evict=True, retry=True, blame=FLOW),
    "EPIPE": _ONE_CONN,
    "ECONNRESET": _ONE_CONN,
    "ECONNABORTED": _ONE_CONN,
    "peer_closed": _ONE_CONN,  # RemoteDisconnected: closed before answering
    "tls_eof": _ONE_CONN,  # TLS unexpected EOF
    # routes: a fresh connection that finds none says the host is unreachable
    "EHOSTUNREACH": _NO_ROUTE,
    "ENETUNREACH": _NO_ROUTE,
    "ENETDOWN": _NO_ROUTE,
    "EHOSTDOWN": _NO_ROUTE,
    # connecting
    "ECONNREFUSED": _CANNOT_CONNECT,
    "dns": _CANNOT_CONNECT,
    # A host that swallows SYNs: the one failure that may open the breaker at
    # once (AZGUARD_TIMEOUT_FAIL_FAST consecutive ones).
    "connect_timeout": Decision(retry=True, blame=HOST, timeout=True),
    # waiting for the answer: the connection's state is unknown afterwards.
    # Not retried: the caller's read timeout is a budget, and retrying would
    # multiply it; black-holed flows are caught sooner by the watchdog.  It
    # blames the host as one ordinary failure (the server may just be slow
    # on one endpoint), and only when the connection shows its TCP alive
    # (see _connection): a dead flow's timeout blames nobody.
    "read_timeout": Decision(evict=True, blame=HOST),
    # the body broke after the headers (short Content-Length, a chunk cut
    # off, the peer closing mid-body): a fresh connection may carry it whole.
    "body_broken": Decision(evict=True, retry=True, blame=CONNECTION),
    # the body stalled mid-way: like read_timeout, a budget not to multiply
    "body_timeout": Decision(evict=True, blame=HOST),
    # the body arrived but cannot be decoded: about that response, not the host
    "body_decode": Decision(evict=True, blame=NOBODY),
    # the proxy could not be reached or could not open the tunnel
    "proxy": Decision(evict=True, blame=PROXY, fail_fast=True),
    # anything else: drop the connection, do not guess further
    "other": Decision(evict=True, blame=HOST),
}


def _check_row(kind: str, decision: Decision) -> None:
    if kind not in DEFAULT_TABLE:
        raise ConfigError("kind", kind, "one of " + ", ".join(sorted(DEFAULT_TABLE)))
    if not isinstance(decision, Decision):
        raise ConfigError("decision", decision, "a requests_azguard.Decision")
    if decision.blame not in BLAMES:
        raise ConfigError("Decision.blame", decision.blame, "one of " + ", ".join(BLAMES))


_lock = threading.Lock()
_overrides: Dict[str, Decision] = {}


def set_decision(kind: str, decision: Decision) -> None:
    """Override one row of the process-wide table (``reset_decisions`` undoes).

    Every guard whose config has no :class:`Policy` of its own follows it.
    """
    _check_row(kind, decision)
    with _lock:
        _overrides[kind] = decision


def reset_decisions() -> None:
    """Forget every process-wide override (tests)."""
    with _lock:
        _overrides.clear()


def decision_for(kind: str, policy: Optional[Policy] = None) -> Decision:
    """The decision for row ``kind``: ``policy``'s, else the process-wide one."""
    if policy is not None:
        own = policy.rows.get(kind)
        if own is not None:
            return own
    return _overrides.get(kind) or DEFAULT_TABLE.get(kind) or DEFAULT_TABLE["other"]


class Policy:
    """An immutable set of row overrides for one config (``GuardConfig.policy``).

    Rows it does not name follow the process-wide table (``DEFAULT_TABLE``
    plus :func:`set_decision`).  Validated when built: an unknown row or a
    blame outside ``BLAMES`` is a ``ConfigError``.  Hashable, so configs
    that hold one stay hashable.

    >>> strict = Policy(ECONNRESET=DEFAULT_TABLE["ECONNRESET"]._replace(retry=False))
    """

    __slots__ = ("_items", "rows")

    rows: Mapping[str, Decision]
    _items: Tuple[Tuple[str, Decision], ...]

    def __init__(self, rows: Optional[Mapping[str, Decision]] = None, **more: Decision) -> None:
        merged = {**(rows or {}), **more}
        for kind, decision in merged.items():
            _check_row(kind, decision)
        object.__setattr__(self, "rows", MappingProxyType(dict(sorted(merged.items()))))
        object.__setattr__(self, "_items", tuple(sorted(merged.items())))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Policy is immutable: use replace()")

    def __reduce__(self) -> Tuple[type, Tuple[Dict[str, Decision]]]:
        # Pickled with the adapter's config (HTTPAdapter.__attrs__).
        return (Policy, (dict(self.rows),))

    def replace(self, **rows: Decision) -> Policy:
        """A copy with ``rows`` set (by row name)."""
        return Policy({**self.rows, **rows})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and other._items == self._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return "Policy(" + ", ".join(f"{k}={v!r}" for k, v in self._items) + ")"


class Classified(NamedTuple):
    kind: str  # the row name
    errno_name: Optional[str]  # e.g. "ECONNRESET", or None
    decision: Decision


def iter_chain(exc: Optional[BaseException], limit: int = 16) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps, outermost first, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < limit:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [
            getattr(current, "reason", None),  # MaxRetryError, ProxyError (1.26)
            getattr(current, "original_error", None),  # ProxyError (2.x)
            current.__cause__,
            current.__context__,
        ]
        nested.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        todo.extend(n for n in nested if isinstance(n, BaseException))


def root_cause(exc: BaseException) -> BaseException:
    """The most specific exception in ``exc``'s chain (for messages and labels):
    the first OS-level error with an errno (a TLS error included), outermost
    first, else the innermost exception."""
    chain = list(iter_chain(exc))
    for item in chain:
        if isinstance(item, OSError) and item.errno:
            return item
    return chain[-1]


# urllib3 2.x wraps resolver failures in NameResolutionError; 1.26 leaves the
# socket.gaierror in the chain under NewConnectionError.
_DNS_ERRORS: Final = tuple(
    t for t in (socket.gaierror, getattr(u3, "NameResolutionError", None)) if t is not None
)


def is_body_error(exc: BaseException) -> bool:
    """Did urllib3 raise ``exc`` while reading a response body (after the headers)?

    Those are the errors requests maps itself when it reads the body
    (``ChunkedEncodingError``, ``ContentDecodingError``, ``ConnectionError``):
    urllib3's response raises ``ProtocolError("Connection broken: ...")`` (or
    "Response ended prematurely", ``InvalidChunkLength``), ``DecodeError`` and
    ``ReadTimeoutError`` without a URL, where the pool raises
    ``ProtocolError("Connection aborted.")`` and ``ReadTimeoutError`` with the
    request's URL for the same failures before the headers, on both lines.
    """
    if isinstance(exc, u3.ProtocolError):
        return not (exc.args and exc.args[0] == "Connection aborted.")
    if isinstance(exc, u3.ReadTimeoutError):
        return exc.url is None
    return isinstance(exc, u3.DecodeError)


def _kind_of(exc: BaseException) -> Optional[str]:
    """The row for one exception on its own, or None if it only wraps others."""
    if getattr(exc, "azguard_blackhole", False):
        return "blackhole"
    if isinstance(exc, u3.ProxyError):
        return "proxy"
    if isinstance(exc, _DNS_ERRORS):
        return "dns"
    if isinstance(exc, u3.ConnectTimeoutError) and not isinstance(exc, u3.NewConnectionError):
        return "connect_timeout"
    if isinstance(exc, u3.HTTPError) and is_body_error(exc):
        if isinstance(exc, u3.ReadTimeoutError):
            return "body_timeout"
        return "body_decode" if isinstance(exc, u3.DecodeError) else "body_broken"
    if isinstance(exc, u3.ReadTimeoutError):
        return "read_timeout"
    if isinstance(exc, ssl.SSLEOFError) or (
        isinstance(exc, ssl.SSLError) and "UNEXPECTED_EOF" in str(exc)
    ):
        return "tls_eof"
    if isinstance(exc, OSError) and exc.errno:
        name = errno.errorcode.get(exc.errno)
        if name is not None:
            return name if name in DEFAULT_TABLE else "other"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "peer_closed"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "read_timeout"
    return None


# Rows that explain a failure better than the wrappers around them; the chain
# is searched for these first (a NewConnectionError wraps ECONNREFUSED; a
# ProxyError wraps whatever stopped the proxy).
_SPECIFIC_FIRST: Final = ("blackhole", "proxy", "dns", "tls_eof", "body_decode")
# Rows found on wrappers, which a precise errno row further in beats.
_GENERIC: Final = ("other", "read_timeout", "peer_closed", "body_broken", "body_timeout")


def classify(exc: BaseException, policy: Optional[Policy] = None) -> Classified:
    """Classify ``exc`` (any requests, urllib3 or OS exception) into a row,
    with the decision ``policy`` (or the process-wide table) gives it."""
    kinds = []
    for item in iter_chain(exc):
        kind = _kind_of(item)
        if kind is not None:
            if kind in _SPECIFIC_FIRST:
                return Classified(kind, _errno_name(exc), decision_for(kind, policy))
            kinds.append(kind)
    # Prefer a precise errno row over the generic ones found on wrappers.
    for kind in kinds:
        if kind not in _GENERIC:
            return Classified(kind, _errno_name(exc), decision_for(kind, policy))
    kind = kinds[0] if kinds else "other"
    return Classified(kind, _errno_name(exc), decision_for(kind, policy))


def _errno_name(exc: BaseException) -> Optional[str]:
    for item in iter_chain(exc):
        if isinstance(item, OSError) and item.errno:
            return errno.errorcode.get(item.errno)
    return None
