"""Step 2, ValidadorInventario: hold the tickets in Redis, then take them in eventos.

The holds (one per seat, or one per reservation for an unseated event) are taken all or
nothing; a seat held by another reservation is SEAT_TAKEN before eventos is even asked.
`ReservarEntradas` is atomic and idempotent per reserva_id in eventos (SOLD_OUT, SEAT_TAKEN), and
names the buyer: eventos enforces the event's tickets per buyer there, under the race
(LIMIT_PER_BUYER_EXCEEDED, not a sell-out: the gate is told the tickets eventos says are left).
Compensation: `LiberarEntradas` (which also spends the reserva_id, so a late retry of
ReservarEntradas takes nothing), then delete the holds still holding this reserva_id.
Every answer of eventos about the event's inventory (a take, a refusal, a give-back) is told to
the admission gate (`reservas.gate`), which keeps the newest.

The log is flushed before this step acts (`durable_before`): it is the first with side effects.
"""

from __future__ import annotations

from typing import Any

from infra.errors import FailedPrecondition, NotFound
from reservas.domain import Reserva, Tipo
from reservas.saga.base import GatePort, HoldsPort, Paso, SagaContext


def hold_keys(holds: HoldsPort, reserva: Reserva) -> list[str]:
    return holds.keys_for(reserva.evento_id, reserva.asientos, reserva.id)


async def report_answer(gate: GatePort, reserva: Reserva, answer: Any) -> None:
    """Tell the admission gate the inventory eventos answered with (a take's or a give-back's reply)."""
    await gate.report(
        reserva.evento_id,
        disponibles=answer.entradas_disponibles,
        version=answer.inventario_version,
        reserva_id=reserva.id,
    )


async def report_refusal(gate: GatePort, reserva: Reserva, refusal: FailedPrecondition) -> None:
    """Tell the admission gate what eventos said is left, when its refusal says it (SOLD_OUT, SEAT_TAKEN,
    LIMIT_PER_BUYER_EXCEEDED: the last is no sell-out, and what it reports is the event's true count)."""
    try:
        disponibles = int(refusal.metadata["disponibles"])
        version = int(refusal.metadata["inventario_version"])
    except (KeyError, TypeError, ValueError):
        return  # another refusal (RESERVA_RELEASED, ...): the saga's end forgets the admission
    await gate.report(reserva.evento_id, disponibles=disponibles, version=version, reserva_id=reserva.id)


class ValidadorInventario(Paso):
    name = "ValidadorInventario"
    completed_by = Tipo.ENTRADAS_BLOQUEADAS
    undone_by = Tipo.ENTRADAS_LIBERADAS
    durable_before = True  # the first side effect: from here on, recovery must know the purchase started

    async def act(self, ctx: SagaContext) -> None:
        reserva, deps = ctx.reserva, ctx.deps
        keys = hold_keys(deps.holds, reserva)
        taken = await deps.holds.acquire(keys, reserva.id)
        if taken:
            seats = [seat for key, seat in zip(keys, reserva.asientos, strict=False) if key in set(taken)]
            raise FailedPrecondition(
                f"seat(s) {', '.join(seats)} are being bought by someone else; choose other seats",
                reason="SEAT_TAKEN",
                metadata={"evento_id": reserva.evento_id, "asientos": ",".join(seats)},
            )
        try:
            taken = await deps.eventos.reservar_entradas(
                reserva.evento_id, reserva.id, reserva.cantidad, reserva.asientos, reserva.usuario_id
            )
        except FailedPrecondition as refusal:  # SOLD_OUT, SEAT_TAKEN, LIMIT_PER_BUYER_EXCEEDED: what is left
            await report_refusal(deps.gate, reserva, refusal)
            raise
        await report_answer(deps.gate, reserva, taken)
        await ctx.record(
            Tipo.ENTRADAS_BLOQUEADAS, holds=keys, cantidad=reserva.cantidad, asientos=list(reserva.asientos)
        )

    async def compensate(self, ctx: SagaContext) -> None:
        reserva, deps = ctx.reserva, ctx.deps
        try:
            given = await deps.eventos.liberar_entradas(reserva.evento_id, reserva.id)
        except NotFound:
            pass  # the event is gone, so nothing of it is taken
        else:
            await report_answer(deps.gate, reserva, given)
        keys = hold_keys(deps.holds, reserva)
        await deps.holds.release(keys, reserva.id)
        await ctx.record(Tipo.ENTRADAS_LIBERADAS, holds=keys)
