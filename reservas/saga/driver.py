"""Who drives a saga: one task per reservation in this process, one process at a time (a lease).

`launch(reserva_id, work)` returns the task driving that reservation here, starting one if
there is none, so concurrent requests for the same reservation share it and never run a
second saga. The task takes the lease in MongoDB first (`NotDriving` if another process
holds it), loads the stream under the lease, runs `work(ctx)`, renews the lease meanwhile,
and at the end marks the saga settled (if it is) and gives the lease up, in one write. A
reservation just claimed (`fresh`: the claim's insert took the lease and has no events yet)
skips the lease and the load. A lost lease sets `ctx.lease_lost`, which stops the work at its
next recorded event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from infra.logs import reserva_id_var
from reservas.domain import Reserva, StoreUnavailable
from reservas.leases import LeaseStore
from reservas.saga.base import SagaContext, SagaDeps

log = logging.getLogger(__name__)

Work = Callable[[SagaContext], Awaitable[None]]


class NotDriving(Exception):  # noqa: N818 - a signal, not an error of the domain
    """Another process holds the reservation's lease: it drives the saga, we only wait for it."""


def durably_settled(reserva: Reserva) -> bool:
    """Settled in the log: events still queued (the work stopped on an error) do not count."""
    return not reserva.pending and reserva.version > 0 and reserva.settled


class Driver:
    def __init__(self, deps: SagaDeps, leases: LeaseStore, *, lease_seconds: float) -> None:
        self.deps = deps
        self.leases = leases
        self.lease_seconds = lease_seconds
        self.active: dict[str, asyncio.Task[Reserva]] = {}
        #: When each active saga started driving here (time.monotonic()), for the age of the oldest.
        self._since: dict[str, float] = {}

    def oldest_seconds(self) -> float:
        """How long the oldest saga this process drives has been running; 0 when none is."""
        since = list(self._since.values())  # read from the /metrics thread: a copy, never the live view
        return time.monotonic() - min(since) if since else 0.0

    def is_active(self, reserva_id: str) -> bool:
        return reserva_id in self.active

    def launch(self, reserva_id: str, work: Work, *, fresh: bool = False) -> asyncio.Task[Reserva]:
        """The task driving this reservation in this process; a new one running `work` if none.

        `fresh`: this process has just claimed the reservation (leased, open, no events yet).
        """
        task = self.active.get(reserva_id)
        if task is None:
            task = asyncio.create_task(self._drive(reserva_id, work, fresh), name=f"saga-{reserva_id}")
            self.active[reserva_id] = task
            self._since[reserva_id] = time.monotonic()
            task.add_done_callback(lambda done: self._forget(reserva_id, done))
        return task

    def _forget(self, reserva_id: str, task: asyncio.Task[Reserva]) -> None:
        if self.active.get(reserva_id) is task:
            del self.active[reserva_id]
            self._since.pop(reserva_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: waiters read it, and no "never retrieved" warning

    async def open(self, reserva_id: str) -> None:
        """Record that a saga (or a cancellation) of this reservation is under way, for recovery."""
        await self.leases.mark_open(reserva_id)  # StoreUnavailable when reservas' database does not answer

    async def _drive(self, reserva_id: str, work: Work, fresh: bool) -> Reserva:
        """The task: take the lease (a fresh claim holds it already), load the stream, work, give the lease up."""
        reserva_id_var.set(reserva_id)  # in this task's own context: every log line of the saga carries it
        if not fresh and not await self.leases.acquire(reserva_id):
            raise NotDriving(reserva_id)
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(reserva_id, lost), name=f"lease-{reserva_id}")
        reserva = Reserva(id=reserva_id)  # a fresh claim has no events yet
        try:
            if not fresh:
                reserva = await self.deps.store.get(reserva_id) or reserva
            await work(SagaContext(reserva, self.deps, lost))
            return reserva
        finally:
            renewer.cancel()
            await self._give_up_lease(reserva_id, settled=durably_settled(reserva))

    async def _give_up_lease(self, reserva_id: str, *, settled: bool) -> None:
        """Release the lease, marking the saga settled in the same write when it is. If the store does not
        answer, the lease expires by itself and recovery, finding the saga open, settles it (a no-op if it is)."""
        try:
            if settled:
                await self.leases.settle_and_release(reserva_id)
            else:
                await self.leases.release(reserva_id)
        except StoreUnavailable:
            log.warning("could not give the saga lease up; it will expire", extra={"settled": settled})

    async def _renew(self, reserva_id: str, lost: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                if not await self.leases.renew(reserva_id):
                    break
                renewed = loop.time()
            except StoreUnavailable:
                if loop.time() - renewed > self.lease_seconds:
                    break
        log.warning("lost the saga lease; another process will settle it")
        lost.set()

    async def shutdown(self, grace: float) -> None:
        """Let the running sagas finish for up to `grace` seconds, then cancel them (recovery resumes them)."""
        tasks = list(self.active.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
