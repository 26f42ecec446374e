"""pymongo's asyncio client stays usable when its callers are cancelled (issue 9: reservas hung after an outage).

The race, made deterministic: an operation waits in server selection on the topology condition (pymongo waits
0.5 s at a time); its wait times out while another operation holds the topology lock, so the wait must re-take
the lock before it returns; then, in one step of the event loop, the waiting caller is cancelled (gRPC cancels a
handler whose caller gave up) and the other operation releases the lock.
"""

from __future__ import annotations

import asyncio
import sys

import pymongo.lock
import pytest
from pymongo.lock import _async_cond_wait, _async_create_condition, _async_create_lock

from infra.mongo import cancellation_safe_pymongo


async def cancelled_while_retaking_the_lock() -> tuple[BaseException | None, bool]:
    """What the cancelled waiter raised, and whether the lock could be taken again afterwards."""
    lock = _async_create_lock()
    condition = _async_create_condition(lock)

    async def select_server() -> None:
        async with condition:
            await _async_cond_wait(condition, 0.05)

    waiting = asyncio.create_task(select_server())
    while not condition._waiters:  # it waits on the condition, the lock released
        await asyncio.sleep(0)
    await lock.acquire()  # another operation takes the topology lock
    while not lock._waiters:  # the wait timed out and is re-taking the lock
        await asyncio.sleep(0.01)
    waiting.cancel()  # the caller's deadline ...
    lock.release()  # ... and the other operation ends, in the same step
    raised = None
    try:
        await waiting
    except BaseException as error:  # noqa: BLE001 - what it raised is the finding
        raised = error
    try:
        async with asyncio.timeout(1):
            await lock.acquire()
    except TimeoutError:
        return raised, False
    lock.release()
    return raised, True


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12's wait_for has no such race")
async def test_on_python_3_11_stock_wait_for_loses_the_lock_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pymongo.lock, "wait_for", asyncio.wait_for)
    raised, free = await cancelled_while_retaking_the_lock()
    assert isinstance(raised, RuntimeError) and "Lock is not acquired" in str(raised)
    assert not free  # held by a task that has ended: every later operation would wait forever


async def test_a_cancelled_wait_leaves_the_lock_usable() -> None:
    cancellation_safe_pymongo()  # what infra.mongo.create_client does
    raised, free = await cancelled_while_retaking_the_lock()
    assert isinstance(raised, asyncio.CancelledError)
    assert free


async def test_a_wait_that_times_out_still_answers_false() -> None:
    cancellation_safe_pymongo()
    condition = _async_create_condition(_async_create_lock())
    async with condition:
        assert await _async_cond_wait(condition, 0.01) is False
        assert condition.locked()
