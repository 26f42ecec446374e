"""Property tests: random sequences of ReservarEntradas / LiberarEntradas against a model, and the invariant.

Each example creates its own event on the test's server, so examples do not see each other.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SEATS = ["A-1", "A-2", "A-3", "B-1", "B-2", "B-3"]
RIDS = [f"r{i}" for i in range(5)]

PROPERTY_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Reserve:
    rid: str
    cantidad: int
    asientos: tuple[str, ...] = ()


@dataclass(frozen=True)
class Release:
    rid: str


def operations(seated: bool) -> st.SearchStrategy[list[Reserve | Release]]:
    if seated:
        reserve = st.builds(
            lambda rid, seats: Reserve(rid, len(seats), tuple(seats)),
            st.sampled_from(RIDS),
            st.lists(st.sampled_from(SEATS), min_size=1, max_size=3, unique=True),
        )
    else:
        reserve = st.builds(Reserve, st.sampled_from(RIDS), st.integers(1, 4))
    release = st.builds(Release, st.sampled_from(RIDS))
    return st.lists(st.one_of(reserve, reserve, release), min_size=1, max_size=12)


@dataclass
class Model:
    """What EventosService must answer, computed the simple sequential way."""

    disponibles: int
    free: set[str]
    active: dict[str, Reserve] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)

    def apply(self, op: Reserve | Release) -> str:
        """The reason the call must fail with, or "OK"."""
        if isinstance(op, Release):
            taken = self.active.pop(op.rid, None)
            if taken is not None:
                self.disponibles += taken.cantidad
                self.free |= set(taken.asientos)
            self.released.add(op.rid)
            return "OK"
        held = self.active.get(op.rid)
        if held is not None:
            same = held.cantidad == op.cantidad and set(held.asientos) == set(op.asientos)
            return "OK" if same else "RESERVA_MISMATCH"
        if op.rid in self.released:
            return "RESERVA_RELEASED"
        if op.asientos and not set(op.asientos) <= self.free:
            return "SEAT_TAKEN"
        if self.disponibles < op.cantidad:
            return "SOLD_OUT"
        self.active[op.rid] = op
        self.disponibles -= op.cantidad
        self.free -= set(op.asientos)
        return "OK"


async def call(eventos, evento_id: str, op: Reserve | Release) -> str:
    try:
        if isinstance(op, Release):
            await eventos.liberar(evento_id, op.rid)
        else:
            await eventos.reservar(evento_id, op.rid, op.cantidad, list(op.asientos))
    except grpc.aio.AioRpcError as error:
        return eventos.reason(error)
    return "OK"


async def create(eventos, seated: bool):
    return await (eventos.create(aforo_total=0, asientos=SEATS) if seated else eventos.create(aforo_total=6))


@PROPERTY_SETTINGS
@given(data=st.data(), seated=st.booleans())
async def test_sequences_match_the_model(eventos, data: st.DataObject, seated: bool) -> None:
    ops = data.draw(operations(seated))
    evento = await create(eventos, seated)
    model = Model(disponibles=6, free=set(SEATS) if seated else set())
    for op in ops:
        assert await call(eventos, evento.id, op) == model.apply(op), op
    final = await eventos.check_invariant(evento.id)
    assert final.entradas_disponibles == model.disponibles
    assert set(final.asientos_disponibles) == model.free
    held = {a.reserva_id: a for a in await eventos.repository.allocations(evento.id)}
    assert set(held) == set(model.active)


@PROPERTY_SETTINGS
@given(data=st.data(), seated=st.booleans())
async def test_concurrent_sequences_keep_the_invariant(eventos, data: st.DataObject, seated: bool) -> None:
    ops = data.draw(operations(seated))
    evento = await create(eventos, seated)
    reasons = await asyncio.gather(*(call(eventos, evento.id, op) for op in ops))
    assert set(reasons) <= {"OK", "SOLD_OUT", "SEAT_TAKEN", "RESERVA_MISMATCH", "RESERVA_RELEASED"}
    await eventos.check_invariant(evento.id)
    # Once every call has answered, a released reserva_id holds nothing.
    released = {op.rid for op in ops if isinstance(op, Release)}
    held = {a.reserva_id for a in await eventos.repository.allocations(evento.id)}
    assert not held & released
