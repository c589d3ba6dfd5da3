"""Breaker state shared through Redis, and what happens when Redis goes away.

One Redis hash per breaker key (``azguard:breaker:<scheme://host:port>``)
holds pybreaker's fields (``state`` with pybreaker's state names,
``fail_counter``, ``opened_at``) plus the half-open trial lease
(``trials``, ``trial_until``).  Every transition is one Lua script, so two
processes cannot both count the fifth failure, both claim the one trial, or
close a breaker that another just re-opened (the scripts are in
``_breaker_redis_scripts``).

pybreaker's own ``CircuitRedisStorage`` is not used for the transitions: it
spends one round trip per field, is not atomic across fields, and on a
``RedisError`` logs a traceback per call and answers "closed", which is
exactly the silent fail-open this library must not do.  ``RedisBreakerStorage``
still implements pybreaker's storage interface, so the shared state can be
inspected (or driven) with pybreaker's own vocabulary.

``RedisLink`` is one client per URL, process-wide.  Its sockets have short
timeouts and no retries, so an unreachable Redis costs one request at most
one socket timeout per ``reattach_interval``; in between, breakers run on
their local state alone.  The outage is logged once (with the URL's password
redacted) and counted, and the link re-attaches on its own once a probe
succeeds.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Any, Callable, Final, Optional, TypeVar

import pybreaker

from ._breaker_redis_scripts import SCRIPTS, Snapshot, snapshot_of, text
from ._errors import ConfigError

__all__ = [
    "NAMESPACE",
    "RedisBreakerStorage",
    "RedisLink",
    "Snapshot",
]

_log = logging.getLogger("requests_azguard.breaker")

#: Prefix of every Redis key this library writes.
NAMESPACE: Final = "azguard:breaker"

_T = TypeVar("_T")


class RedisLink:
    """One Redis client for one URL, and whether Redis is reachable right now.

    ``call(now, fn)`` runs ``fn(client)`` and returns its result, or None when
    Redis is unreachable (then no further attempt is made before
    ``now + reattach_interval``, and only one thread probes after that).
    """

    def __init__(
        self,
        url: str,
        redacted: str,
        *,
        socket_timeout: float,
        reattach_interval: float,
    ) -> None:
        self.redacted = redacted
        self._url = url
        self._socket_timeout = socket_timeout
        self._reattach_interval = reattach_interval
        self._lock = threading.Lock()
        self._client: Any = None
        self._scripts: Any = None
        self._down_until = 0.0
        self._probing = False
        #: False while Redis is unreachable.
        self.attached = True
        #: How many times Redis became unreachable, and how many calls failed.
        self.outages = 0
        self.errors = 0

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"<RedisLink {self.redacted} {state} outages={self.outages}>"

    def _connect(self) -> Any:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ConfigError(
                "AZGUARD_REDIS_URL",
                self.redacted,
                "a URL only when the redis package is installed "
                "(pip install 'requests-azguard[redis]')",
            ) from None
        # No retries and short timeouts: a dead Redis must cost a request
        # milliseconds, never redis-py's default retries with backoff.
        client = redis.Redis.from_url(
            self._url,
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._scripts = {name: client.register_script(lua) for name, lua in SCRIPTS.items()}
        return client

    @property
    def client(self) -> Any:
        """The redis-py client (created on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def script(self, name: str) -> Any:
        self.client  # noqa: B018 - creates the scripts with the client
        return self._scripts[name]

    def call(self, now: float, fn: Callable[[Any], _T]) -> Optional[_T]:
        if not self.attached:
            with self._lock:
                if now < self._down_until or self._probing:
                    return None
                self._probing = True
        try:
            result = fn(self.client)
        except Exception as exc:
            # Not only RedisError: redis-py raises ValueError for a URL it
            # cannot use, TypeError or a ResponseError for an odd reply, and
            # a missing redis package is a ConfigError here.  Whatever Redis
            # does, the request goes on with the breaker's local state.
            self._mark_down(now, exc)
            return None
        except BaseException:
            self._end_probe()
            raise
        if not self.attached:
            with self._lock:
                self.attached = True
                self._probing = False
            _log.warning(
                "Redis at %s is reachable again: circuit breakers share state again",
                self.redacted,
            )
        return result

    def _end_probe(self) -> None:
        with self._lock:
            self._probing = False

    def _mark_down(self, now: float, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self._down_until = now + self._reattach_interval
            self._probing = False
            first = self.attached
            self.attached = False
            if first:
                self.outages += 1
        if first:
            # Once per outage, not per call: a dead Redis must not flood logs.
            _log.warning(
                "Redis at %s is unreachable (%s): circuit breakers continue on local "
                "state and re-attach when it answers",
                self.redacted,
                self._describe(exc),
            )

    def _describe(self, exc: BaseException) -> str:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
            # Network errors name the address, which helps; the URL's
            # secrets are masked in case one is quoted.
            return self._scrub(f"{type(exc).__name__}: {exc}")
        # Anything else (a parser's ValueError, an AUTH error) may quote a
        # fragment of the password that no mask can recognise: type only.
        return type(exc).__name__

    def _scrub(self, text: str) -> str:
        from ._redact import scrub

        return scrub(text, self._url)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a dead connection must not raise
                pass


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


class RedisBreakerStorage(pybreaker.CircuitBreakerStorage):
    """One breaker's shared state: pybreaker's storage interface plus atomic moves.

    The atomic methods (``fetch``, ``fail``, ``succeed``, ``claim``,
    ``release``) return a :class:`Snapshot`, or None when Redis is
    unreachable; the pybreaker-style properties are blocking reads for
    inspection and raise ``redis.RedisError`` on failure.
    """

    def __init__(self, link: RedisLink, key: str, ttl: int) -> None:
        super().__init__("redis")
        self.link = link
        self.hkey = f"{NAMESPACE}:{key}"
        self._ttl = ttl

    def __repr__(self) -> str:
        return f"<RedisBreakerStorage {self.hkey} via {self.link.redacted}>"

    # -- atomic transitions (used by the breaker) ----------------------------

    def _run(self, now: float, name: str, *args: object) -> Optional[Snapshot]:
        def run(client: Any) -> Snapshot:
            # Inside link.call: creating the client, loading the script and
            # reading the reply can all fail, and none may reach a request.
            script = self.link.script(name)
            return snapshot_of(script(keys=[self.hkey], args=[self._ttl, *args], client=client))

        return self.link.call(now, run)

    def fetch(self, now: float) -> Optional[Snapshot]:
        return self._run(now, "fetch")

    def fail(
        self,
        now: float,
        fail_max: int,
        force_open: bool,
        is_trial: bool,
        opened_at: Optional[float] = None,
    ) -> Optional[Snapshot]:
        """Count a failure; ``opened_at`` (default ``now``) is recorded if it opens
        (a re-published open state keeps its original time)."""
        at = now if opened_at is None else opened_at
        return self._run(now, "fail", repr(at), fail_max, int(force_open), int(is_trial))

    def succeed(self, now: float, is_trial: bool) -> Optional[Snapshot]:
        return self._run(now, "succeed", int(is_trial))

    def claim(
        self, now: float, reset_timeout: float, lease: float, max_trials: int
    ) -> Optional[Snapshot]:
        snap = self._run(now, "claim", repr(now), repr(reset_timeout), repr(lease), max_trials)
        if snap is not None and not snap.existed:
            # Only a breaker that is not closed claims a trial, so the key
            # should be there: Redis lost it.  "Closed" from an empty store
            # would turn the trial into an ordinary request, every time; the
            # local state decides instead, as when Redis is unreachable.
            return None
        return snap

    def release(self, now: float) -> Optional[Snapshot]:
        return self._run(now, "release")

    # -- pybreaker's CircuitBreakerStorage interface -------------------------

    def _get(self, field: str) -> Optional[str]:
        value = self.link.client.hget(self.hkey, field)
        return None if value is None else text(value)

    @property
    def state(self) -> str:
        return self._get("state") or "closed"

    @state.setter
    def state(self, state: str) -> None:
        self.link.client.hset(self.hkey, "state", state)

    @property
    def counter(self) -> int:
        return int(float(self._get("fail_counter") or 0))

    def increment_counter(self) -> None:
        self.link.client.hincrby(self.hkey, "fail_counter", 1)

    def reset_counter(self) -> None:
        self.link.client.hset(self.hkey, "fail_counter", 0)

    @property
    def success_counter(self) -> int:
        # Half-open closes on the first successful trial: nothing to count.
        return 0

    def increment_success_counter(self) -> None:
        pass

    def reset_success_counter(self) -> None:
        pass

    @property
    def opened_at(self) -> Optional[datetime]:
        value = self._get("opened_at")
        return _datetime(float(value)) if value else None

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        self.link.client.hset(self.hkey, "opened_at", repr(when.timestamp()))
