"""A rate limit per identity: a token bucket in Redis, taken in one Lua script per call.

Each identity (role, sub and usuario_id of its token) has a bucket of `burst` tokens that refills at
`rate` per second; a call takes one, and a call that finds none gets RESOURCE_EXHAUSTED with a
google.rpc.RetryInfo saying when one will be there. The bucket lives in Redis, so every replica of a
service shares it; the script reads Redis' own clock, so replicas' clocks do not matter.

Limits are per role, from the environment: EVENTFLOW_RATE_LIMIT_CLIENTE, _ADMIN and _SERVICIO, each
"RATE/BURST" (calls per second / calls at once) or "off". The defaults are far above what a person
does and far below what a script hammering the API does; `servicio` (reservas' own calls during an
on-sale) gets the highest.

Redis down, slow or refusing: the call goes through (logged, at most once per minute). The limiter
protects the services from floods; it must not turn a Redis outage into a refusal of every call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio
from redis.exceptions import RedisError

from infra.auth import Principal, Role
from infra.errors import ResourceExhausted
from infra.redis_client import connect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens added per second
    burst: int  # the bucket's size: calls allowed at once after a quiet spell

    def __str__(self) -> str:
        return f"{self.rate:g}/{self.burst}"


#: None: no limit for that role.
Limits = Mapping[Role, Limit | None]

DEFAULT_LIMITS: Limits = {
    Role.CLIENTE: Limit(20, 60),
    Role.ADMIN: Limit(200, 600),
    Role.SERVICIO: Limit(5000, 20000),
}

_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local rate = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1])
local at = tonumber(bucket[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return wait
"""


def limits_from_env(env: Mapping[str, str]) -> dict[Role, Limit | None]:
    """The limits EVENTFLOW_RATE_LIMIT_<ROLE> set ("RATE/BURST" or "off"), the defaults for the others."""
    limits = dict(DEFAULT_LIMITS)
    for role in Role:
        var = f"EVENTFLOW_RATE_LIMIT_{role.name}"
        raw = env.get(var, "").strip()
        if not raw:
            continue
        if raw.lower() == "off":
            limits[role] = None
            continue
        try:
            rate_text, burst_text = raw.split("/")
            limit = Limit(float(rate_text), int(burst_text))
        except ValueError:
            raise ValueError(f"{var} must be RATE/BURST (e.g. 20/60) or off, got {raw!r}") from None
        if not (limit.rate > 0 and limit.burst >= 1):
            raise ValueError(f"{var}: the rate must be more than 0 and the burst at least 1, got {raw!r}")
        limits[role] = limit
    return limits


class RateLimiter:
    """Admits the calls of each identity within its role's limit (see the module docstring)."""

    def __init__(self, client: redis.asyncio.Redis, limits: Limits = DEFAULT_LIMITS) -> None:
        self.client = client
        self.limits = dict(limits)
        self._script = client.register_script(_SCRIPT)
        self._warned_at = 0.0

    @staticmethod
    def key(principal: Principal) -> str:
        # One hash tag per identity: the script touches one key, so one Redis Cluster slot.
        return f"ratelimit:{{{principal.role}:{principal.sub}:{principal.usuario_id}}}"

    async def admit(self, principal: Principal) -> None:
        """Take one call from the principal's bucket; ResourceExhausted (with when to retry) when it is empty."""
        limit = self.limits.get(principal.role)
        if limit is None:
            return
        try:
            wait_ms = int(await self._script(keys=[self.key(principal)], args=[limit.rate, limit.burst]))
        except (RedisError, OSError) as error:
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("rate limit not applied: Redis did not answer", extra={"error": type(error).__name__})
            return
        if wait_ms > 0:
            raise ResourceExhausted(
                f"too many calls: a {principal.role} may make {limit.rate:g} per second ({limit.burst} at once); "
                f"try again in {wait_ms} ms",
                reason="RATE_LIMITED",
                metadata={"limit": str(limit), "retry_after_ms": wait_ms},
                retry_delay=wait_ms / 1000,
            )

    async def close(self) -> None:
        await self.client.aclose()


def limiter_for(redis_url: str, limits: Limits) -> RateLimiter | None:
    """The limiter of a service whose Redis is at `redis_url`; None (no limit) without one."""
    if not redis_url:
        log.warning("no REDIS_URL: calls are not rate limited per identity")
        return None
    return RateLimiter(connect(redis_url), limits)
