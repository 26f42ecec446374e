"""The Redis client of reservas: the admission gate and the rate limiter (short timeouts), the holds (longer).

redis-py's defaults retry a failed command 10 times with backoff (seconds per call while Redis is down),
and its asyncio pool raises past 100 connections in use: callers on the request path want a short timeout,
one immediate retry and a pool larger than the calls in flight.

The retry is what brings a client back after Redis restarts: a client made by `from_url` has no retry of
its own, and with RESP3's maintenance notifications on (redis-py 8's default) the pool no longer checks a
connection before handing it out, so every pooled connection failed its next command once ("Connection
closed by server"): the purchases of the first seconds after an outage failed REDIS_UNAVAILABLE while
health already said SERVING (issue 9). Retried, the command goes out on the connection made again.
"""

from __future__ import annotations

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def connect(url: str, *, timeout_seconds: float = 0.25, max_connections: int = 512) -> redis.asyncio.Redis:
    """A client with short timeouts, one immediate retry and a large pool; nothing connects until the first call.

    `max_connections` should exceed the calls in flight in this process: past it a call fails at once
    (the caller treats it as "no answer") rather than queueing.
    """
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 1),
        max_connections=max_connections,
    )
