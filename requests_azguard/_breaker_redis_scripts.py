"""The Lua scripts that move one breaker's Redis hash, and what they answer.

Every transition of a shared breaker is one script, so two processes cannot
both count the fifth failure, both claim the one trial, or close a breaker
that another just re-opened; each script reads the hash back, so every call
is one round trip and returns a :class:`Snapshot`.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple

__all__ = ["SCRIPTS", "Snapshot", "snapshot_of", "text"]


class Snapshot(NamedTuple):
    """The shared state of one breaker as Redis answered it."""

    state: str
    opened_at: float
    fail_counter: int
    trial_until: float
    granted: bool = True  # for claim(): whether this caller got a trial slot
    #: False when the key did not exist before the script ran: Redis lost its
    #: data (FLUSHALL, a restart without persistence) or never had any.  An
    #: absent key reads as "closed", which must not close a breaker that this
    #: process holds open (see HostBreaker._adopt).
    existed: bool = True


# Each script ends by reading the hash back, so every call returns a Snapshot
# (state, opened_at, fail_counter, trial_until, granted) in one round trip.
_TAIL = """
if ttl > 0 then redis.call('EXPIRE', k, ttl) end
local h = redis.call('HMGET', k, 'state', 'opened_at', 'fail_counter', 'trial_until')
return {h[1] or 'closed', h[2] or '0', h[3] or '0', h[4] or '0', granted, existed}
"""

_HEAD = """
local k = KEYS[1]
local existed = redis.call('EXISTS', k)
local st = redis.call('HGET', k, 'state') or 'closed'
local granted = 1
"""

# ARGV: ttl
_FETCH = _HEAD + "local ttl = 0\n" + _TAIL

# ARGV: ttl, now, fail_max, force_open (0/1), is_trial (0/1)
_FAIL = (
    _HEAD
    + """
local ttl = tonumber(ARGV[1])
local now = ARGV[2]
if st == 'closed' then
  local n = redis.call('HINCRBY', k, 'fail_counter', 1)
  if n >= tonumber(ARGV[3]) or ARGV[4] == '1' then
    redis.call('HSET', k, 'state', 'open', 'opened_at', now, 'fail_counter', 0, 'trials', 0)
  end
elseif st == 'half-open' and ARGV[5] == '1' then
  redis.call('HSET', k, 'state', 'open', 'opened_at', now, 'trials', 0)
end
"""
    + _TAIL
)

# ARGV: ttl, is_trial (0/1)
_SUCCEED = (
    _HEAD
    + """
local ttl = tonumber(ARGV[1])
if st == 'half-open' and ARGV[2] == '1' then
  redis.call('HSET', k, 'state', 'closed', 'fail_counter', 0, 'trials', 0, 'trial_until', 0)
elseif st == 'closed' then
  redis.call('HSET', k, 'fail_counter', 0)
end
"""
    + _TAIL
)

# ARGV: ttl, now, reset_timeout, lease, max_trials
_CLAIM = (
    _HEAD
    + """
local ttl = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if st == 'open' then
  local opened = tonumber(redis.call('HGET', k, 'opened_at') or '0')
  if now >= opened + tonumber(ARGV[3]) then
    redis.call('HSET', k, 'state', 'half-open', 'trials', 1, 'trial_until', ARGV[2] + ARGV[4])
  else
    granted = 0
  end
elseif st == 'half-open' then
  local until_ = tonumber(redis.call('HGET', k, 'trial_until') or '0')
  local trials = tonumber(redis.call('HGET', k, 'trials') or '0')
  if now >= until_ then
    redis.call('HSET', k, 'trials', 1, 'trial_until', ARGV[2] + ARGV[4])
  elseif trials < tonumber(ARGV[5]) then
    redis.call('HINCRBY', k, 'trials', 1)
  else
    granted = 0
  end
end
"""
    + _TAIL
)

# ARGV: ttl
_RELEASE = (
    _HEAD
    + """
local ttl = tonumber(ARGV[1])
if st == 'half-open' and tonumber(redis.call('HGET', k, 'trials') or '0') > 0 then
  redis.call('HINCRBY', k, 'trials', -1)
end
"""
    + _TAIL
)

#: Script name -> Lua source, registered with each client.
SCRIPTS: Dict[str, str] = {
    "fetch": _FETCH,
    "fail": _FAIL,
    "succeed": _SUCCEED,
    "claim": _CLAIM,
    "release": _RELEASE,
}


def text(value: Any) -> str:
    """A reply field as text (redis-py gives bytes unless told to decode)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def snapshot_of(reply: List[Any]) -> Snapshot:
    """The Snapshot a script returned (redis-py may hand back bytes)."""
    return Snapshot(
        state=text(reply[0]),
        opened_at=float(text(reply[1])),
        fail_counter=int(float(text(reply[2]))),
        trial_until=float(text(reply[3])),
        granted=int(reply[4]) == 1,
        existed=len(reply) < 6 or int(reply[5]) == 1,
    )
