"""Temporary holds on tickets in Redis, taken before eventos is asked for them.

A hold is a key whose value is the reservation holding it, with a TTL, so a saga that
dies leaves nothing taken for longer than the TTL. Seated events hold one key per seat,
unseated ones one key per reservation. Taking and giving back are Lua scripts, so they
are atomic on the server:

- acquire: all or nothing. A key free or already held by this reservation is (re)set with
  a fresh TTL; if any key is held by another reservation, nothing is touched and those
  keys are returned. Retrying an acquire is therefore harmless.
- release: compare-and-delete, so a reservation never frees a hold that expired and was
  then taken by somebody else.

Redis being down or too slow surfaces as `Unavailable(reason="REDIS_UNAVAILABLE")`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra.errors import Unavailable

T = TypeVar("T")

# KEYS: the hold keys; ARGV[1]: reserva_id; ARGV[2]: ttl in milliseconds.
# Returns the keys held by another reservation (empty: every key is now held by ARGV[1]).
_ACQUIRE = """
local taken = {}
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[1] then
    taken[#taken + 1] = key
  end
end
if #taken > 0 then
  return taken
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
return taken
"""

# KEYS: the hold keys; ARGV[1]: reserva_id. Deletes the keys still held by ARGV[1]; returns how many.
_RELEASE = """
local deleted = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    deleted = deleted + redis.call('DEL', key)
  end
end
return deleted
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class HoldStore:
    """Holds on seats (or on a reservation's tickets) of an event, in Redis."""

    def __init__(self, redis: redis.asyncio.Redis, ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        self._redis = redis
        self.ttl_ms = int(ttl_ms)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    @staticmethod
    def keys_for(evento_id: str, asientos: Sequence[str], reserva_id: str) -> list[str]:
        """One key per seat for a seated event; one key for the reservation otherwise.

        The event's id is the keys' hash tag (`{evento_id}`): the keys one script takes together live in one
        Redis Cluster slot, so the same scripts run on a cluster.
        """
        if asientos:
            return [f"hold:{{{evento_id}}}:{asiento}" for asiento in asientos]
        return [f"hold:{{{evento_id}}}:reserva:{reserva_id}"]

    async def acquire(self, keys: Sequence[str], reserva_id: str) -> list[str]:
        """Hold every key for `reserva_id`, or none. Returns the keys held by other reservations."""
        if not keys:
            return []
        taken = await self._guard(self._acquire(keys=list(keys), args=[reserva_id, self.ttl_ms]))
        return [_text(key) for key in taken]

    async def release(self, keys: Sequence[str], reserva_id: str) -> int:
        """Delete the keys still held by `reserva_id`; returns how many were deleted."""
        if not keys:
            return 0
        return int(await self._guard(self._release(keys=list(keys), args=[reserva_id])))

    async def holders(self, keys: Sequence[str]) -> dict[str, str | None]:
        """Who holds each key (None: free)."""
        if not keys:
            return {}
        values = await self._guard(self._redis.mget(list(keys)))
        return {key: None if value is None else _text(value) for key, value in zip(keys, values, strict=True)}

    @staticmethod
    async def _guard(call: Awaitable[T]) -> T:
        try:
            return await call
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise Unavailable(
                "the hold store (Redis) is unavailable; try again shortly",
                reason="REDIS_UNAVAILABLE",
                metadata={"error": type(error).__name__},
            ) from error
