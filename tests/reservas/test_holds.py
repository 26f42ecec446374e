"""HoldStore against a real redis-server: all-or-nothing holds, compare-and-delete, TTL, contention."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from infra import procs
from infra.errors import Unavailable
from infra.redis_client import connect as redis_connect
from reservas.holds import HoldStore


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    r = redis.asyncio.Redis.from_url(redis_url)
    yield r
    await r.aclose()


def evento() -> str:
    return f"ev-{uuid.uuid4().hex}"


async def test_keys_for_seated_and_unseated() -> None:
    assert HoldStore.keys_for("e1", ["A1", "A2"], "r1") == ["hold:{e1}:A1", "hold:{e1}:A2"]
    assert HoldStore.keys_for("e1", [], "r1") == ["hold:{e1}:reserva:r1"]


async def test_acquire_takes_every_key_for_the_reservation(client: redis.asyncio.Redis) -> None:
    store = HoldStore(client, ttl_ms=60_000)
    keys = HoldStore.keys_for(evento(), ["A1", "A2", "A3"], "r1")
    assert await store.acquire(keys, "r1") == []
    assert await store.holders(keys) == dict.fromkeys(keys, "r1")
    ttl = await client.pttl(keys[0])
    assert 0 < ttl <= 60_000


async def test_conflict_takes_none_and_names_the_taken_keys(client: redis.asyncio.Redis) -> None:
    store = HoldStore(client, ttl_ms=60_000)
    ev = evento()
    assert await store.acquire(HoldStore.keys_for(ev, ["A2"], "r1"), "r1") == []
    keys = HoldStore.keys_for(ev, ["A1", "A2", "A3"], "r2")
    assert await store.acquire(keys, "r2") == [f"hold:{{{ev}}}:A2"]
    assert await store.holders(keys) == {f"hold:{{{ev}}}:A1": None, f"hold:{{{ev}}}:A2": "r1", f"hold:{{{ev}}}:A3": None}


async def test_reacquire_by_the_same_reservation_is_idempotent_and_refreshes_the_ttl(
    client: redis.asyncio.Redis,
) -> None:
    store = HoldStore(client, ttl_ms=60_000)
    keys = HoldStore.keys_for(evento(), ["A1", "A2"], "r1")
    assert await store.acquire(keys[:1], "r1") == []
    await client.pexpire(keys[0], 5_000)
    assert await store.acquire(keys, "r1") == []  # a retry, with one more seat
    assert await store.holders(keys) == dict.fromkeys(keys, "r1")
    assert await client.pttl(keys[0]) > 5_000


async def test_release_deletes_only_the_keys_still_held_by_the_reservation(client: redis.asyncio.Redis) -> None:
    store = HoldStore(client, ttl_ms=60_000)
    ev = evento()
    mine = HoldStore.keys_for(ev, ["A1", "A2"], "r1")
    theirs = HoldStore.keys_for(ev, ["B1"], "r2")
    assert await store.acquire(mine, "r1") == []
    assert await store.acquire(theirs, "r2") == []
    assert await store.release([*mine, *theirs], "r1") == 2
    assert await store.holders([*mine, *theirs]) == {mine[0]: None, mine[1]: None, theirs[0]: "r2"}
    assert await store.release(mine, "r1") == 0  # again: nothing left to delete


async def test_holds_expire_after_the_ttl(client: redis.asyncio.Redis) -> None:
    store = HoldStore(client, ttl_ms=200)
    keys = HoldStore.keys_for(evento(), [], "r1")
    assert await store.acquire(keys, "r1") == []
    for _ in range(100):
        if (await store.holders(keys))[keys[0]] is None:
            break
        await asyncio.sleep(0.05)
    assert await store.holders(keys) == {keys[0]: None}
    assert await store.acquire(keys, "r2") == []  # free again, for anybody


async def test_twenty_concurrent_acquirers_of_one_seat_exactly_one_wins(client: redis.asyncio.Redis) -> None:
    store = HoldStore(client, ttl_ms=60_000)
    ev = evento()
    reservas = [f"r{i}" for i in range(20)]
    results = await asyncio.gather(*(store.acquire(HoldStore.keys_for(ev, ["A1"], r), r) for r in reservas))
    winners = [r for r, taken in zip(reservas, results, strict=True) if taken == []]
    assert len(winners) == 1
    assert all(taken == [f"hold:{{{ev}}}:A1"] for taken in results if taken)
    assert await store.holders([f"hold:{{{ev}}}:A1"]) == {f"hold:{{{ev}}}:A1": winners[0]}


async def test_overlapping_seat_sets_never_share_a_seat(client: redis.asyncio.Redis) -> None:
    store = HoldStore(client, ttl_ms=60_000)
    ev = evento()
    wanted = {f"r{i}": [f"S{i}", f"S{(i + 1) % 10}"] for i in range(10)}
    results = await asyncio.gather(*(store.acquire(HoldStore.keys_for(ev, s, r), r) for r, s in wanted.items()))
    winners = [r for r, taken in zip(wanted, results, strict=True) if not taken]
    held = await store.holders(HoldStore.keys_for(ev, [f"S{i}" for i in range(10)], "-"))
    for r in winners:  # every winner holds both of its seats; losers hold nothing
        assert all(held[f"hold:{{{ev}}}:{s}"] == r for s in wanted[r])
    assert sorted(h for h in held.values() if h) == sorted(r for r in winners for _ in range(2))


async def test_works_with_a_client_that_decodes_responses(redis_url: str) -> None:
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        store = HoldStore(r, ttl_ms=60_000)
        ev = evento()
        assert await store.acquire(HoldStore.keys_for(ev, ["A1"], "r1"), "r1") == []
        assert await store.acquire(HoldStore.keys_for(ev, ["A1"], "r2"), "r2") == [f"hold:{{{ev}}}:A1"]
        assert await store.holders([f"hold:{{{ev}}}:A1"]) == {f"hold:{{{ev}}}:A1": "r1"}
    finally:
        await r.aclose()


async def test_redis_down_is_unavailable(tmp_path) -> None:  # noqa: ANN001
    port = procs.free_port()
    server = procs.redis_process(port, None, tmp_path / "redis.log").start()
    try:
        server.wait_listening()
        r = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1, retry=None)
        store = HoldStore(r, ttl_ms=60_000)
        keys = HoldStore.keys_for("e1", ["A1"], "r1")
        assert await store.acquire(keys, "r1") == []
        server.stop()
        for call in (store.acquire(keys, "r1"), store.release(keys, "r1"), store.holders(keys)):
            with pytest.raises(Unavailable) as raised:
                await call
            assert raised.value.reason == "REDIS_UNAVAILABLE"
        await r.aclose()
    finally:
        server.stop()


def test_the_keys_one_script_touches_share_one_redis_cluster_slot() -> None:
    """Holds, the admission gate and the rate limiter run on Redis Cluster: each script's keys share a hash tag."""
    from redis.crc import key_slot  # noqa: PLC0415

    from infra.auth import Principal, Role  # noqa: PLC0415
    from infra.ratelimit import RateLimiter  # noqa: PLC0415
    from reservas.gate import AdmissionGate  # noqa: PLC0415

    def one_slot(keys: list[str]) -> bool:
        return len({key_slot(k.encode()) for k in keys}) == 1

    seats = [f"{row}-{n}" for row in "ABCDEFGH" for n in range(1, 11)]
    assert one_slot(HoldStore.keys_for("evento-1", seats, "r-1"))
    gate = AdmissionGate.__new__(AdmissionGate)
    gate.prefix = "gate"
    for evento_id in ("evento-1", "a{b}c", "}{"):
        assert one_slot([*gate.keys(evento_id), gate.marker(evento_id, "u-1", "key-1")]), evento_id
    assert "{" in RateLimiter.key(Principal("usuario:u-1", Role.CLIENTE, "u-1"))


async def test_reservas_client_holds_again_at_once_after_redis_restarts(tmp_path) -> None:  # noqa: ANN001
    """Every pooled connection is stale after a restart; reservas' client (infra.redis_client) makes it again
    instead of failing the next command on each of them (issue 9)."""
    port = procs.free_port()
    server = procs.redis_process(port, tmp_path / "data", tmp_path / "redis.log").start()
    r = redis_connect(f"redis://127.0.0.1:{port}/0", timeout_seconds=2)
    try:
        server.wait_listening()
        store = HoldStore(r, ttl_ms=60_000)
        ev = evento()
        await asyncio.gather(*(store.acquire(HoldStore.keys_for(ev, [], f"r{i}"), f"r{i}") for i in range(20)))
        server.kill()
        server.stop()
        server.start()
        await asyncio.to_thread(server.wait_listening)
        held = await asyncio.gather(*(store.acquire(HoldStore.keys_for(ev, [], f"s{i}"), f"s{i}") for i in range(20)))
        assert held == [[]] * 20
    finally:
        await r.aclose()
        server.stop()
