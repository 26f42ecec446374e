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
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from pymongo.errors import PyMongoError

from infra.logs import reserva_id_var
from reservas.domain import Reserva
from reservas.leases import LeaseStore
from reservas.saga.base import SagaContext, SagaDeps, StoreUnavailable

log = logging.getLogger(__name__)

Work = Callable[[SagaContext], Awaitable[None]]


class NotDriving(Exception):  # noqa: N818 - a signal, not an error of the domain
    """Another process holds the reservation's lease: it drives the saga, we only wait for it."""


def _store_unavailable(reserva_id: str) -> StoreUnavailable:
    return StoreUnavailable(
        "reservas' database is unavailable; try again shortly", metadata={"reserva_id": reserva_id}
    )


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
        try:
            await self.leases.mark_open(reserva_id)
        except PyMongoError as error:
            raise _store_unavailable(reserva_id) from error

    async def _drive(self, reserva_id: str, work: Work, fresh: bool) -> Reserva:
        token = reserva_id_var.set(reserva_id)
        try:
            try:
                if not fresh and not await self.leases.acquire(reserva_id):
                    raise NotDriving(reserva_id)
            except PyMongoError as error:
                raise _store_unavailable(reserva_id) from error
            ctx: SagaContext | None = None
            lost = asyncio.Event()
            renewer = asyncio.create_task(self._renew(reserva_id, lost), name=f"lease-{reserva_id}")
            try:
                try:
                    reserva = (None if fresh else await self.deps.store.get(reserva_id)) or Reserva(id=reserva_id)
                except PyMongoError as error:
                    raise _store_unavailable(reserva_id) from error
                ctx = SagaContext(reserva, self.deps, lost)
                await work(ctx)
                return ctx.reserva
            finally:
                renewer.cancel()
                await self._finish(reserva_id, ctx)
        finally:
            reserva_id_var.reset(token)

    async def _finish(self, reserva_id: str, ctx: SagaContext | None) -> None:
        # Only what is durable counts: events still queued (the work stopped on an error) are not settled.
        settled = ctx is not None and not ctx.reserva.pending and ctx.reserva.version > 0 and ctx.reserva.settled
        with contextlib.suppress(PyMongoError):
            if settled:
                await self.leases.settle_and_release(reserva_id)
            else:
                await self.leases.release(reserva_id)

    async def _renew(self, reserva_id: str, lost: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                if not await self.leases.renew(reserva_id):
                    break
                renewed = loop.time()
            except PyMongoError:
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
