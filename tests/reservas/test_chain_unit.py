"""Unit tests of the saga chain with in-memory fakes of its ports (no servers).

They pin the orchestration rules: actions in chain order, stop at the first failure,
compensations newest first, a failing compensation retried and recorded without hiding the
original error, the reverse saga's order, and the request's field rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import timestamp_pb2

from eventflow.eventos.v1 import eventos_pb2
from infra.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from reservas.domain import FORWARD_OUTCOMES, ConcurrencyConflict, Estado, Reserva, Solicitud, Tipo, TipoPago, check_fields
from reservas.holds import HoldStore
from reservas.payments import LedgerEntry, PaymentDeclined, PaymentTimeout
from reservas.saga.base import Paso, SagaContext, SagaDeps, SagaTakenOver
from reservas.saga.chain import CANCELLATION_ORDER, STEPS, build_chain
from reservas.saga.procesador_pago import ProcesadorPago
from reservas.saga.saga import Saga, error_from

FUTURE = datetime.now(UTC) + timedelta(days=30)


class Calls(list[str]):
    """The side effects, in the order they happened."""


class Failures:
    """Scripted failures: name -> list of exceptions to raise on successive calls (None = succeed)."""

    def __init__(self) -> None:
        self.plan: dict[str, list[Exception | None]] = {}

    def set(self, name: str, *outcomes: Exception | None, forever: Exception | None = None) -> None:
        self.plan[name] = list(outcomes)
        if forever is not None:
            self.plan[name + "*"] = [forever]

    def check(self, name: str) -> None:
        queue = self.plan.get(name)
        if queue:
            outcome = queue.pop(0)
            if outcome is not None:
                raise outcome
            return
        forever = self.plan.get(name + "*")
        if forever:
            raise forever[0]


class FakeStore:
    def __init__(self) -> None:
        self.events: dict[str, list[Any]] = {}

    async def save(self, reserva: Reserva) -> None:
        stream = self.events.setdefault(reserva.id, [])
        if reserva.pending and reserva.pending[0].version != len(stream) + 1:  # as the event store's unique key
            raise ConcurrencyConflict(f"{reserva.id} is at version {len(stream)}")
        for event in reserva.pending:
            stream.append(event)
        reserva.pending.clear()

    async def get(self, reserva_id: str, as_of: datetime | None = None) -> Reserva | None:
        return Reserva.replay(self.events.get(reserva_id, []))

    def tipos(self, reserva_id: str) -> list[str]:
        return [str(e.tipo) for e in self.events.get(reserva_id, [])]


class FakeUsuarios:
    def __init__(self, calls: Calls, failures: Failures) -> None:
        self.calls, self.failures = calls, failures

    async def get_usuario(self, usuario_id: str) -> object:
        self.calls.append("GetUsuario")
        self.failures.check("GetUsuario")
        return object()

    async def registrar_compra(self, usuario_id: str, reserva_id: str) -> None:
        self.calls.append("RegistrarCompra")
        self.failures.check("RegistrarCompra")

    async def anular_compra(self, usuario_id: str, reserva_id: str) -> None:
        self.calls.append("AnularCompra")
        self.failures.check("AnularCompra")


class FakeEventos:
    def __init__(self, calls: Calls, failures: Failures, asientos: Sequence[str] = ()) -> None:
        self.calls, self.failures = calls, failures
        fecha = timestamp_pb2.Timestamp()
        fecha.FromDatetime(FUTURE)
        self.evento = eventos_pb2.Evento(
            id="e1", fecha=fecha, aforo_total=10, precio=1500, moneda="UYU", asientos=list(asientos),
            con_asientos=bool(asientos),
        )

    async def get_evento(self, evento_id: str, fields: Sequence[str] = ()) -> eventos_pb2.Evento:
        self.calls.append("GetEvento")
        self.failures.check("GetEvento")
        return self.evento

    async def reservar_entradas(
        self, evento_id: str, reserva_id: str, cantidad: int, asientos: Sequence[str], usuario_id: str = ""
    ) -> Any:
        self.calls.append("ReservarEntradas")
        self.failures.check("ReservarEntradas")
        return self.evento

    async def liberar_entradas(self, evento_id: str, reserva_id: str) -> Any:
        self.calls.append("LiberarEntradas")
        self.failures.check("LiberarEntradas")
        return self.evento


class FakeHolds:
    def __init__(self, calls: Calls, failures: Failures) -> None:
        self.calls, self.failures = calls, failures
        self.held: dict[str, str] = {}

    @staticmethod
    def keys_for(evento_id: str, asientos: Sequence[str], reserva_id: str) -> list[str]:
        return HoldStore.keys_for(evento_id, asientos, reserva_id)

    async def acquire(self, keys: Sequence[str], reserva_id: str) -> list[str]:
        self.calls.append("holds.acquire")
        self.failures.check("holds.acquire")
        taken = [k for k in keys if self.held.get(k, reserva_id) != reserva_id]
        if not taken:
            self.held.update(dict.fromkeys(keys, reserva_id))
        return taken

    async def release(self, keys: Sequence[str], reserva_id: str) -> int:
        self.calls.append("holds.release")
        self.failures.check("holds.release")
        mine = [k for k in keys if self.held.get(k) == reserva_id]
        for key in mine:
            del self.held[key]
        return len(mine)


class FakePayments:
    def __init__(self, calls: Calls, failures: Failures) -> None:
        self.calls, self.failures = calls, failures
        self.ledger: list[LedgerEntry] = []

    def _entry(self, reserva_id: str, tipo: TipoPago, monto: int) -> LedgerEntry:
        entry = LedgerEntry(f"p{len(self.ledger) + 1}", reserva_id, tipo, monto, "UYU", datetime.now(UTC))
        self.ledger.append(entry)
        return entry

    async def charge(self, reserva_id: str, monto: int, moneda: str, medio_pago: str) -> LedgerEntry:
        self.calls.append("charge")
        self.failures.check("charge")
        if medio_pago == "tok_declined":
            raise PaymentDeclined("declined")
        existing = [e for e in self.ledger if e.reserva_id == reserva_id and e.tipo is TipoPago.CARGO]
        if existing:
            return existing[0]
        entry = self._entry(reserva_id, TipoPago.CARGO, monto)
        if medio_pago == "tok_timeout":
            raise PaymentTimeout("no answer")
        return entry

    async def refund(self, reserva_id: str) -> LedgerEntry | None:
        self.calls.append("refund")
        self.failures.check("refund")
        mine = [e for e in self.ledger if e.reserva_id == reserva_id]
        charge = next((e for e in mine if e.tipo is TipoPago.CARGO), None)
        if charge is None:
            return None
        refund = next((e for e in mine if e.tipo is TipoPago.REEMBOLSO), None)
        return refund or self._entry(reserva_id, TipoPago.REEMBOLSO, charge.monto)

    async def entries(self, reserva_id: str) -> list[LedgerEntry]:
        return [e for e in self.ledger if e.reserva_id == reserva_id]

    def net(self, reserva_id: str) -> int:
        return sum(e.monto if e.tipo is TipoPago.CARGO else -e.monto for e in self.ledger if e.reserva_id == reserva_id)


class World:
    def __init__(self, asientos: Sequence[str] = ()) -> None:
        self.calls = Calls()
        self.failures = Failures()
        self.store = FakeStore()
        self.payments = FakePayments(self.calls, self.failures)
        self.holds = FakeHolds(self.calls, self.failures)
        self.deps = SagaDeps(
            usuarios=FakeUsuarios(self.calls, self.failures),
            eventos=FakeEventos(self.calls, self.failures, asientos),
            holds=self.holds,
            payments=self.payments,
            store=self.store,
        )

    async def start(self, medio_pago: str = "tok_visa", asientos: Sequence[str] = (), cantidad: int = 2) -> SagaContext:
        ctx = SagaContext(Reserva(id="r1"), self.deps)
        solicitud = Solicitud("u1", "e1", cantidad, tuple(asientos), medio_pago, "k1")
        await ctx.record(Tipo.RESERVA_SOLICITADA, **solicitud.datos())
        return ctx


def saga(chain: Paso | None = None) -> Saga:
    return Saga(chain or build_chain(), CANCELLATION_ORDER, attempts=3, backoff=0.001)


FORWARD = ["GetUsuario", "GetEvento", "holds.acquire", "ReservarEntradas", "charge", "RegistrarCompra", "holds.release"]


async def test_the_chain_is_the_four_steps_in_order() -> None:
    assert [step.name for step in build_chain()] == [
        "ValidadorDatos",
        "ValidadorInventario",
        "ProcesadorPago",
        "ConfirmadorReserva",
    ]
    assert [cls.name for cls in STEPS] == [step.name for step in build_chain()]
    # The aggregate's list of forward outcomes (refused while compensating) is the chain's, step for step.
    assert {cls.completed_by for cls in STEPS if cls.completed_by is not None} == FORWARD_OUTCOMES


async def test_happy_path_runs_every_action_in_order_and_records_each_transition() -> None:
    world = World()
    ctx = await world.start()
    await saga().run(ctx)
    assert world.calls == FORWARD
    assert ctx.reserva.estado is Estado.CONFIRMADA
    assert (ctx.reserva.monto, ctx.reserva.charged) == (3000, 3000)
    assert world.store.tipos("r1") == [
        "ReservaSolicitada",
        "PasoIniciado", "DatosValidados",
        "PasoIniciado", "EntradasBloqueadas",
        "PasoIniciado", "PagoProcesado",
        "PasoIniciado", "CompraRegistrada", "ReservaConfirmada",
    ]  # fmt: skip
    assert world.holds.held == {}


async def test_a_declined_payment_stops_the_chain_and_compensates_newest_first() -> None:
    world = World()
    ctx = await world.start("tok_declined")
    with pytest.raises(PaymentDeclined):
        await saga().run(ctx)
    assert "RegistrarCompra" not in world.calls
    assert world.calls == [
        "GetUsuario", "GetEvento", "holds.acquire", "ReservarEntradas", "charge",
        "refund",  # ProcesadorPago was started: undone first (a no-op, nothing was charged)
        "LiberarEntradas", "holds.release",  # then ValidadorInventario
    ]  # fmt: skip
    assert world.store.tipos("r1")[-5:] == [
        "PagoRechazado", "CompensacionIniciada", "PagoReembolsado", "EntradasLiberadas", "ReservaFallida",
    ]  # fmt: skip
    reserva = ctx.reserva
    assert (reserva.estado, reserva.razon, reserva.charged, reserva.pagos) == (Estado.FALLIDA, "PAYMENT_DECLINED", 0, [])


async def test_a_refund_of_a_charge_the_log_never_heard_of_records_the_charge_first() -> None:
    """The replicas race found streams that said -1500: a replica whose lease lapsed charged after the one that
    took its saga over had read the ledger (nothing there), and the taker's refund reached the log alone."""
    world = World()
    ctx = await world.start()
    charge = await world.payments.charge("r1", 1500, "UYU", "tok_visa")  # behind the log's back
    await ProcesadorPago().compensate(ctx)
    await ctx.flush()
    assert world.store.tipos("r1")[-2:] == ["PagoProcesado", "PagoReembolsado"]
    assert [p.id for p in ctx.reserva.pagos][0] == charge.id
    assert ctx.reserva.charged == world.payments.net("r1") == 0


async def test_a_compensation_that_loses_the_race_to_a_confirmation_undoes_nothing() -> None:
    """Two owners of one saga: a replica whose lease lapsed unnoticed confirms it, while the recovery that took it
    over (reading the log before that confirmation) decides to undo it. Whoever's write reaches the log first
    wins; the compensation writes before it undoes, so losing it gives no ticket back and refunds nothing."""
    world = World()
    old = await world.start()
    await old.flush()
    taker = SagaContext(await world.store.get("r1"), world.deps)  # recovery's view: requested, nothing more
    await saga().run(old)  # the old owner goes on and confirms
    assert old.reserva.estado is Estado.CONFIRMADA
    with pytest.raises(SagaTakenOver):
        await saga().compensate(taker, Unavailable("interrupted"), saga().possibly_started(old.reserva))
    assert world.calls == FORWARD  # no LiberarEntradas, refund or AnularCompra
    assert world.payments.net("r1") == 3000 and world.store.tipos("r1")[-1] == "ReservaConfirmada"


async def test_a_failure_in_the_last_step_undoes_all_three_before_it_newest_first() -> None:
    world = World()
    world.failures.set("RegistrarCompra", NotFound("no such user", reason="USUARIO_NOT_FOUND"))
    ctx = await world.start()
    with pytest.raises(NotFound):
        await saga().run(ctx)
    assert world.calls[len(FORWARD) - 1 :] == ["AnularCompra", "refund", "LiberarEntradas", "holds.release"]
    assert world.payments.net("r1") == 0
    assert ctx.reserva.estado is Estado.FALLIDA
    assert ctx.reserva.charged == 0 and len(ctx.reserva.pagos) == 2


async def test_a_failing_compensation_is_retried_and_recorded_and_the_original_error_kept() -> None:
    world = World()
    down = Unavailable("eventos is down", reason="DEPENDENCY_UNAVAILABLE")
    world.failures.set("LiberarEntradas", down, down, None)
    ctx = await world.start("tok_declined")
    with pytest.raises(PaymentDeclined):
        await saga().run(ctx)
    assert world.calls.count("LiberarEntradas") == 3
    retries = [e for e in world.store.events["r1"] if e.tipo is Tipo.COMPENSACION_REINTENTADA]
    assert [(e.datos["paso"], e.datos["intento"], e.datos["razon"]) for e in retries] == [
        ("ValidadorInventario", 1, "DEPENDENCY_UNAVAILABLE"),
        ("ValidadorInventario", 2, "DEPENDENCY_UNAVAILABLE"),
    ]
    assert ctx.reserva.estado is Estado.FALLIDA
    assert ctx.reserva.razon == "PAYMENT_DECLINED"  # not hidden by the compensation's failure


async def test_a_compensation_that_keeps_failing_leaves_the_others_done_and_the_saga_open() -> None:
    world = World()
    world.failures.set("RegistrarCompra", Unavailable("usuarios is down", reason="DEPENDENCY_UNAVAILABLE"))
    world.failures.set("AnularCompra", forever=Unavailable("usuarios is down", reason="DEPENDENCY_UNAVAILABLE"))
    ctx = await world.start()
    with pytest.raises(Unavailable) as raised:
        await saga().run(ctx)
    assert raised.value.message == "usuarios is down"
    assert world.calls.count("AnularCompra") == 3
    assert world.payments.net("r1") == 0 and "LiberarEntradas" in world.calls  # the others still ran
    assert ctx.reserva.estado is Estado.PENDIENTE and ctx.reserva.compensando
    assert saga().to_undo(ctx.reserva) == ["ConfirmadorReserva"]

    # Later (recovery), usuarios is back: the compensation finishes with the original error.
    world.failures.plan.clear()
    assert await saga().compensate(ctx, error_from(ctx.reserva))
    assert ctx.reserva.estado is Estado.FALLIDA
    assert (ctx.reserva.razon, ctx.reserva.codigo) == ("DEPENDENCY_UNAVAILABLE", "Unavailable")


async def test_a_payment_timeout_is_settled_from_the_ledger_and_refunded() -> None:
    world = World()
    ctx = await world.start("tok_timeout")
    with pytest.raises(FailedPrecondition) as raised:
        await saga().run(ctx)
    assert raised.value.reason == "PAYMENT_TIMEOUT"
    assert world.payments.net("r1") == 0
    tipos = world.store.tipos("r1")
    assert tipos[tipos.index("PagoProcesado") :] == [
        "PagoProcesado", "CompensacionIniciada", "PagoReembolsado", "EntradasLiberadas", "ReservaFallida",
    ]  # fmt: skip
    assert [p.tipo for p in ctx.reserva.pagos] == [TipoPago.CARGO, TipoPago.REEMBOLSO]


async def test_a_request_refused_before_the_first_write_records_nothing_and_names_no_reservation() -> None:
    world = World()
    world.failures.set("GetEvento", NotFound("no such event", reason="EVENTO_NOT_FOUND"))
    ctx = await world.start()
    with pytest.raises(NotFound) as raised:
        await saga().run(ctx)
    assert world.calls == ["GetUsuario", "GetEvento"]
    assert world.store.tipos("r1") == []  # nothing was done, so nothing is recorded
    assert raised.value.reason == "EVENTO_NOT_FOUND" and "reserva_id" not in raised.value.metadata


async def test_an_outage_before_the_first_write_is_recorded_for_the_retry() -> None:
    world = World()
    world.failures.set("GetEvento", Unavailable("eventos is down", reason="DEPENDENCY_UNAVAILABLE"))
    ctx = await world.start()
    with pytest.raises(Unavailable):
        await saga().run(ctx)
    assert world.store.tipos("r1") == ["ReservaSolicitada", "PasoIniciado", "CompensacionIniciada", "ReservaFallida"]
    error = error_from(ctx.reserva)
    assert (error.reason, error.metadata["reserva_id"]) == ("DEPENDENCY_UNAVAILABLE", "r1")


async def test_a_seat_held_by_another_reservation_is_seat_taken_before_eventos_is_asked() -> None:
    world = World(asientos=["A-1", "A-2", "A-3"])
    world.holds.held["hold:{e1}:A-2"] = "someone-else"
    ctx = await world.start(asientos=["A-1", "A-2"])
    with pytest.raises(FailedPrecondition) as raised:
        await saga().run(ctx)
    assert (raised.value.reason, raised.value.metadata["asientos"]) == ("SEAT_TAKEN", "A-2")
    assert "ReservarEntradas" not in world.calls
    assert world.holds.held == {"hold:{e1}:A-2": "someone-else"}  # compare-and-delete left it alone


async def test_a_new_step_joins_the_chain_without_touching_the_others() -> None:
    class Auditor(Paso):
        name = "Auditor"

        def __init__(self, calls: Calls) -> None:
            super().__init__()
            self.calls = calls

        async def act(self, ctx: SagaContext) -> None:
            self.calls.append("audit")

        async def compensate(self, ctx: SagaContext) -> None:
            self.calls.append("unaudit")

    world = World()
    world.failures.set("charge", PaymentDeclined("declined"))
    steps = [cls() for cls in STEPS]
    chain = build_chain([*steps[:2], Auditor(world.calls), *steps[2:]])
    ctx = await world.start()
    with pytest.raises(PaymentDeclined):
        await saga(chain).run(ctx)
    assert world.calls == [
        "GetUsuario", "GetEvento", "holds.acquire", "ReservarEntradas", "audit", "charge",
        "refund", "unaudit", "LiberarEntradas", "holds.release",
    ]  # fmt: skip


async def test_going_on_after_the_last_step_runs_nothing_again() -> None:
    """Recovery goes on from the step after the payment: in a chain where the payment is last, that is nothing
    (not the chain from its first step again)."""
    world = World()
    steps = [cls() for cls in STEPS]
    ctx = await world.start()
    await saga(build_chain(steps[:2])).run(ctx)
    world.calls.clear()
    await saga(build_chain(steps[:2])).run_after(ctx, steps[1].name)
    assert world.calls == [] and world.store.tipos("r1")[-1] == "EntradasBloqueadas"


async def test_cancellation_refunds_then_gives_the_tickets_back_then_drops_the_purchase() -> None:
    world = World()
    ctx = await world.start()
    orchestrator = saga()
    await orchestrator.run(ctx)
    world.calls.clear()
    await orchestrator.cancel(ctx)
    assert world.calls == ["refund", "LiberarEntradas", "holds.release", "AnularCompra"]
    assert ctx.reserva.estado is Estado.CANCELADA and ctx.reserva.charged == 0
    assert world.store.tipos("r1")[-5:] == [
        "CancelacionSolicitada", "PagoReembolsado", "EntradasLiberadas", "CompraAnulada", "ReservaCancelada",
    ]  # fmt: skip
    await orchestrator.cancel(ctx)  # idempotent: nothing more happens
    assert len(world.calls) == 4


async def test_an_unexpected_exception_is_undone_and_answered_as_internal() -> None:
    world = World()
    world.failures.set("charge", RuntimeError("bug"))
    ctx = await world.start()
    with pytest.raises(DomainError) as raised:
        await saga().run(ctx)
    assert raised.value.reason == "INTERNAL"
    assert ctx.reserva.estado is Estado.FALLIDA


def solicitud(**changes: Any) -> Solicitud:
    fields: dict[str, Any] = {
        "usuario_id": "u1",
        "evento_id": "e1",
        "cantidad": 2,
        "asientos": (),
        "medio_pago": "tok_visa",
        "idempotency_key": "k1",
    }
    fields.update(changes)
    return Solicitud(**fields)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"usuario_id": ""}, "usuario_id"),
        ({"evento_id": "  "}, "evento_id"),
        ({"evento_id": "x" * 129}, "evento_id"),
        ({"cantidad": 0}, "cantidad"),
        ({"cantidad": 11}, "cantidad"),
        ({"cantidad": -3}, "cantidad"),
        ({"asientos": ("A-1", "A-1")}, "asientos"),
        ({"asientos": ("A-1",)}, "asientos"),
        ({"asientos": ("A-1", "")}, "asientos"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 129}, "idempotency_key"),
    ],
)
def test_field_rules_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        check_fields(solicitud(**changes))
    assert raised.value.metadata["field"] == field


def test_valid_fields_pass() -> None:
    check_fields(solicitud())
    check_fields(solicitud(asientos=("A-1", "B-2")))
    check_fields(solicitud(cantidad=10, idempotency_key="k" * 128))


async def test_a_charge_the_log_never_heard_of_is_refunded_and_the_purchase_fails_when_the_saga_compensates() -> None:
    """The ledger took the charge but its answer was lost (LedgerUnavailable after the insert landed, or a replica
    that lost its lease charged behind the log): the saga's own compensation records the charge, refunds it and
    settles FALLIDA, instead of refusing to record the charge while compensating and leaving the saga open."""
    world = World()
    world.failures.set("charge", Unavailable("the ledger did not answer", reason="MONGODB_UNAVAILABLE"))
    world.payments._entry("r1", TipoPago.CARGO, 3000)  # it landed all the same
    ctx = await world.start()
    with pytest.raises(Unavailable):
        await saga().run(ctx)
    assert ctx.reserva.estado is Estado.FALLIDA
    assert "CompensacionReintentada" not in world.store.tipos("r1")
    assert ctx.reserva.charged == world.payments.net("r1") == 0


async def test_a_purchase_recorded_in_usuarios_after_the_saga_was_lost_is_annulled_when_another_undid_it() -> None:
    """Our lease lapsed while RegistrarCompra was on its way and another process began undoing the saga: the
    renewer noticed first, so recording CompraRegistrada (not the flush) says SagaTakenOver. The purchase we put
    in usuarios after its AnularCompra must go all the same, or a FALLIDA reservation stays in the history."""
    world = World()
    ctx = await world.start()
    registrar = world.deps.usuarios.registrar_compra

    async def lapsing(usuario_id: str, reserva_id: str) -> None:
        await registrar(usuario_id, reserva_id)
        taker = await world.store.get("r1")  # what the other process found, and began to undo
        assert taker is not None
        taker.record(Tipo.COMPENSACION_INICIADA, {"motivo": "interrupted", "razon": "SAGA_INTERRUPTED"}, FUTURE)
        await world.store.save(taker)
        ctx.lease_lost.set()

    world.deps.usuarios.registrar_compra = lapsing  # type: ignore[method-assign]
    with pytest.raises(SagaTakenOver):
        await saga().run(ctx)
    assert world.calls[-2:] == ["RegistrarCompra", "AnularCompra"]
