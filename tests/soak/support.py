"""What the soak tests share: buyers that keep count, a restartable reservas process, settling."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from eventflow.reservas.v1 import reservas_pb2
from infra import procs
from infra.errors import error_info
from tests.bench.cluster import wait_serving
from tests.bench.load import TRANSIENT_CODES, expected, outcome, poll_pending
from tests.reservas import invariants
from tests.reservas.invariants import Report

# tests/reservas/conftest.py imports its checker by the bare name `invariants` (pytest puts tests/reservas
# on sys.path when it collects that directory; `make soak` does not collect it): bind that name first.
sys.modules.setdefault("invariants", invariants)

from tests.reservas.conftest import World  # noqa: E402
from callers import RECONNECT, open_channel

CONFIRMADA = reservas_pb2.ESTADO_RESERVA_CONFIRMADA
CANCELADA = reservas_pb2.ESTADO_RESERVA_CANCELADA


def connect(world: World, address: str) -> grpc.aio.Channel:
    """A channel to `address`, closed with the world, that comes back quickly after a restart."""
    channel = open_channel(address, options=RECONNECT)
    world.channels.append(channel)
    return channel


@dataclass
class Tally:
    """Every answer the buyers got, and the reservations they were told are CONFIRMADA."""

    outcomes: Counter[str] = field(default_factory=Counter)
    confirmed: dict[str, reservas_pb2.Reserva] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    #: SOLD_OUT answers of the admission gate (no reserva_id: no reservation was recorded).
    gate_refusals: int = 0

    def ok(self, reserva: reservas_pb2.Reserva) -> None:
        self.outcomes["OK"] += 1
        assert reserva.estado == CONFIRMADA, reserva
        self.confirmed[reserva.id] = reserva

    def failed(self, error: grpc.aio.AioRpcError) -> str:
        what = outcome(error)
        self.outcomes[what] += 1
        info = error_info(error)
        if what.endswith("/SOLD_OUT") and info is not None and "reserva_id" not in info.metadata:
            self.gate_refusals += 1  # answered by the admission gate: nothing was recorded
        return what

    async def cancel(self, world: World, reserva_id: str) -> None:
        """Cancel a confirmed purchase: CANCELADA now, or UNAVAILABLE and completed later by recovery."""
        self.cancelled.add(reserva_id)
        try:
            cancelled = await world.cancelar(reserva_id)
        except grpc.aio.AioRpcError as error:
            what = outcome(error)
            self.outcomes[f"cancel {what}"] += 1
            if what.split("/")[0] not in TRANSIENT_CODES:
                raise
            return
        self.outcomes["cancel OK"] += 1
        assert cancelled.estado == CANCELADA, cancelled

    def unexpected(self) -> dict[str, int]:
        return {what: n for what, n in self.outcomes.items() if not expected(what)}

    def check_against(self, report: Report) -> None:
        """What buyers were told matches what is stored: CONFIRMADA (or CANCELADA when we cancelled it)."""
        wrong = []
        for rid in self.confirmed:
            stored = report.reservas.get(rid)
            want = "CANCELADA" if rid in self.cancelled else "CONFIRMADA"
            if stored is None or stored.estado != want:
                wrong.append(f"{rid}: answered CONFIRMADA, stored {stored.estado if stored else 'nothing'}")
        assert not wrong, "answers and stored reservations disagree:\n  " + "\n  ".join(wrong[:20])
        assert not self.unexpected(), f"unexpected answers: {self.unexpected()} (all: {dict(self.outcomes)})"


async def create_usuarios(world: World, n: int, batch: int = 100) -> list[str]:
    """n buyers, created `batch` at a time."""
    usuarios: list[str] = []
    while len(usuarios) < n:
        usuarios += await world.usuarios_n(min(batch, n - len(usuarios)))
    return usuarios


async def wait_all_settled(world: World, timeout: float) -> float:
    """Wait until no stored reservation is PENDIENTE (or cancelling); seconds it took.

    Reads every stream only to find the unsettled ones and to confirm the end; in between it polls
    those through GetReserva (full reads every second would compete with the recovery it waits for).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        report = await world.check(allow_pending=True)
        unsettled = [r for r in report.reservas.values() if not r.settled]
        if not unsettled:
            return loop.time() - started
        if loop.time() - started > timeout:
            shown = ", ".join(f"{r.id} ({r.estado}, v{r.version})" for r in unsettled[:10])
            raise AssertionError(f"{len(unsettled)} reservations still unsettled after {timeout:.0f}s: {shown}")
        await poll_pending(world.stub, [r.id for r in unsettled], until=started + timeout)


class Reservas:
    """`python -m reservas` as a subprocess on a fixed port, killed and restarted at will."""

    def __init__(self, world: World, logs: Path, **env: str) -> None:
        self.port = procs.free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = world.reservas_env(self.port, **env)
        self.logs = logs
        self.process: procs.ManagedProcess | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        log = self.logs / f"reservas-{self.starts}.log"
        self.process = procs.service_process("reservas", self.port, self.env, log).start()
        await asyncio.to_thread(self.process.wait_listening, 60)
        await wait_serving(self.address, timeout=60)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown, whatever it was doing."""
        if self.process is not None:
            self.process.kill()
            self.process.stop()
