"""The reservation aggregate, event sourced. No I/O.

A reservation's state is never stored: it is rebuilt by applying its events, oldest
first, one apply rule per event type. New events are produced by `Reserva.record`,
which checks that the transition is allowed, applies the event and queues it in
`pending` until the event store appends it (the unique (reserva_id, version) key
is the optimistic-concurrency check).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from infra.errors import DomainError, FailedPrecondition, InvalidArgument, Unavailable
from infra.limits import check_length
from infra.seats import check_seats

# --- caps: the longest value of every field a request carries (issue 8) --------------------------
# Checked before anything is recorded or asked of another service; the error names the field and its cap,
# and never echoes more than a short prefix of the value. page_token's cap is the same everywhere
# (infra.pagination).
#: Any id a request names: usuario_id, evento_id, a reservation's id (and ListReservas' filters).
MAX_ID = 128
MAX_IDEMPOTENCY_KEY = 128
#: A payment token (medio_pago).
MAX_MEDIO_PAGO = 64
#: Tickets of one purchase (and so the seats it names).
MAX_CANTIDAD = 10

# --- money: bounded so that no amount or total overflows an int64 (issue 8) ---------------------------
MAX_INT64 = 2**63 - 1
#: A ticket's price in minor units, as eventos bounds it.
MAX_PRECIO = 10**9
#: The most one purchase can cost (precio x cantidad); an event's takings are at most eventos' MAX_RECAUDADO.
MAX_MONTO = MAX_PRECIO * MAX_CANTIDAD


def importe(precio: int, cantidad: int) -> int:
    """What a purchase costs: precio x cantidad, both within their bounds, so the amount fits in an int64."""
    if not 0 <= precio <= MAX_PRECIO:
        raise InvalidArgument(
            f"precio must be from 0 to {MAX_PRECIO} minor units, got {precio}", metadata={"field": "precio"}
        )
    if not 1 <= cantidad <= MAX_CANTIDAD:
        raise InvalidArgument(f"cantidad must be from 1 to {MAX_CANTIDAD}, got {cantidad}", metadata={"field": "cantidad"})
    return precio * cantidad


def check_not_past(evento_id: str, fecha: datetime, at: datetime, consequence: str, **metadata: str) -> None:
    """FailedPrecondition EVENT_PAST when the event took place at or before `at`; `consequence` says what that stops."""
    if fecha <= at:
        raise FailedPrecondition(
            f"evento {evento_id!r} took place on {fecha.isoformat()}; {consequence}",
            reason="EVENT_PAST",
            metadata={"evento_id": evento_id, "fecha": fecha.isoformat(), **metadata},
        )


def check_text(field: str, value: str, limit: int) -> None:
    """A required string of at most `limit` characters; InvalidArgument naming the field (and the cap) otherwise."""
    if not value or not value.strip():
        raise InvalidArgument(f"{field} is required", metadata={"field": field})
    check_length(field, value, limit)


class Estado(enum.StrEnum):
    PENDIENTE = "PENDIENTE"
    CONFIRMADA = "CONFIRMADA"
    FALLIDA = "FALLIDA"
    CANCELADA = "CANCELADA"


class TipoPago(enum.StrEnum):
    CARGO = "CARGO"
    REEMBOLSO = "REEMBOLSO"


class Tipo(enum.StrEnum):
    """The event types of a reservation's stream (the domain's Spanish, as the seed names them)."""

    RESERVA_SOLICITADA = "ReservaSolicitada"  # usuario_id, evento_id, cantidad, asientos, medio_pago, idempotency_key
    DATOS_VALIDADOS = "DatosValidados"  # monto, moneda, precio, fecha_evento, con_asientos
    PASO_INICIADO = "PasoIniciado"  # paso: written before a step's side effects start
    ENTRADAS_BLOQUEADAS = "EntradasBloqueadas"  # holds, cantidad, asientos
    PAGO_PROCESADO = "PagoProcesado"  # pago_id, monto, moneda
    PAGO_RECHAZADO = "PagoRechazado"  # motivo, razon
    COMPRA_REGISTRADA = "CompraRegistrada"  # (usuarios recorded it in historial_compras)
    RESERVA_CONFIRMADA = "ReservaConfirmada"
    COMPENSACION_INICIADA = "CompensacionIniciada"  # motivo, razon, codigo, detalle, pasos (to undo, newest first)
    COMPENSACION_REINTENTADA = "CompensacionReintentada"  # paso, error, intento
    ENTRADAS_LIBERADAS = "EntradasLiberadas"
    PAGO_REEMBOLSADO = "PagoReembolsado"  # pago_id, monto, moneda (pago_id None: nothing was charged)
    COMPRA_ANULADA = "CompraAnulada"
    RESERVA_FALLIDA = "ReservaFallida"  # motivo, razon, codigo, detalle
    CANCELACION_SOLICITADA = "CancelacionSolicitada"  # motivo
    RESERVA_CANCELADA = "ReservaCancelada"  # motivo


class ConcurrencyConflict(DomainError):
    """Another writer appended to the stream first; reload and decide again."""

    reason = "CONCURRENT_UPDATE"


@dataclass(frozen=True)
class Solicitud:
    """What a buyer asked for (ReservarRequest), before any check."""

    usuario_id: str
    evento_id: str
    cantidad: int
    asientos: tuple[str, ...]
    medio_pago: str
    idempotency_key: str

    def datos(self) -> dict[str, Any]:
        """The data of ReservaSolicitada."""
        return {
            "usuario_id": self.usuario_id,
            "evento_id": self.evento_id,
            "cantidad": self.cantidad,
            "asientos": list(self.asientos),
            "medio_pago": self.medio_pago,
            "idempotency_key": self.idempotency_key,
        }


def check_fields(solicitud: Solicitud) -> None:
    """The request's own rules; InvalidArgument naming the field. Pure: nothing is asked or recorded. (Which
    payment methods there are is the gateway's to say: PaymentGateway.check_medio_pago.)"""
    check_text("usuario_id", solicitud.usuario_id, MAX_ID)
    check_text("evento_id", solicitud.evento_id, MAX_ID)
    check_length("medio_pago", solicitud.medio_pago, MAX_MEDIO_PAGO)
    check_text("idempotency_key", solicitud.idempotency_key, MAX_IDEMPOTENCY_KEY)
    if not 1 <= solicitud.cantidad <= MAX_CANTIDAD:
        raise InvalidArgument(
            f"cantidad must be from 1 to {MAX_CANTIDAD}, got {solicitud.cantidad}", metadata={"field": "cantidad"}
        )
    check_seats(solicitud.asientos, solicitud.cantidad)


class StoreUnavailable(Unavailable):
    """reservas' own MongoDB did not answer (the event store, the saga leases): nothing can be recorded, so a saga
    does nothing more. It stays open; recovery settles it from the log once the database answers again."""

    reason = "MONGODB_UNAVAILABLE"

    @classmethod
    def about(cls, reserva_id: str) -> StoreUnavailable:
        """Reading or leasing one reservation failed."""
        return cls("reservas' database is unavailable; try again shortly", metadata={"reserva_id": reserva_id})

    @classmethod
    def appending(cls, reserva_id: str, recorded: bool) -> StoreUnavailable:
        """Appending to a reservation's stream failed; `recorded`: an earlier append stored part of it, so the
        answer may name it (GetReserva finds it), and recovery settles it."""
        if not recorded:
            return cls("reservas' database is unavailable: nothing was recorded; try again shortly")
        return cls(
            "reservas' database is unavailable; the reservation will be settled when it is back",
            metadata={"reserva_id": reserva_id},
        )


class InvalidTransition(FailedPrecondition):
    reason = "INVALID_TRANSITION"


@dataclass(frozen=True)
class Event:
    """One recorded fact of a reservation's stream."""

    reserva_id: str
    version: int
    tipo: Tipo
    datos: Mapping[str, Any]
    ocurrido: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pago:
    id: str
    tipo: TipoPago
    monto: int
    ocurrido: datetime


#: The events that record a saga step's outcome going forward. Which step each belongs to is the saga's to say (each
#: step names the events of its outcome and of its undo: reservas.saga.base.Paso), so the aggregate knows no step.
FORWARD_OUTCOMES = frozenset({Tipo.DATOS_VALIDADOS, Tipo.ENTRADAS_BLOQUEADAS, Tipo.PAGO_PROCESADO, Tipo.COMPRA_REGISTRADA})


@dataclass
class Reserva:
    """The aggregate. Build it with `Reserva.replay(events)`; change it with `record`."""

    id: str
    version: int = 0
    usuario_id: str = ""
    evento_id: str = ""
    cantidad: int = 0
    asientos: tuple[str, ...] = ()
    medio_pago: str = ""
    idempotency_key: str = ""
    estado: Estado = Estado.PENDIENTE
    monto: int = 0
    moneda: str = ""
    motivo: str = ""
    razon: str = ""
    # Why it failed, enough to answer the same error again: the DomainError class name
    # (codigo) and its metadata (detalle), from CompensacionIniciada / ReservaFallida.
    codigo: str = ""
    detalle: dict[str, str] = field(default_factory=dict)
    creada: datetime | None = None
    actualizada: datetime | None = None
    pagos: list[Pago] = field(default_factory=list)
    #: The steps announced (PasoIniciado), by the names the saga gave them, in order.
    pasos_iniciados: list[str] = field(default_factory=list)
    #: Every event type its stream holds: the saga reads its steps' outcomes and undos from it.
    tipos: set[Tipo] = field(default_factory=set)
    #: The steps its compensation undoes (from CompensacionIniciada, when it names them), newest first.
    pasos_a_deshacer: list[str] | None = None
    compensando: bool = False
    cancelando: bool = False
    pending: list[Event] = field(default_factory=list, repr=False)

    # ---- reading -------------------------------------------------------------------------

    @classmethod
    def replay(cls, events: Iterable[Event]) -> Reserva | None:
        """The state after `events` (a stream, oldest first); None for an empty stream."""
        reserva: Reserva | None = None
        for event in events:
            if reserva is None:
                reserva = cls(id=event.reserva_id)
            reserva._apply(event)
        return reserva

    @property
    def settled(self) -> bool:
        """True when no saga or cancellation is still in progress for it."""
        if self.estado in (Estado.FALLIDA, Estado.CANCELADA):
            return True
        return self.estado is Estado.CONFIRMADA and not self.cancelando

    @property
    def charged(self) -> int:
        """Net amount taken from the buyer: charges minus refunds."""
        return sum(p.monto if p.tipo is TipoPago.CARGO else -p.monto for p in self.pagos)

    # ---- changing ------------------------------------------------------------------------

    def record(self, tipo: Tipo, datos: Mapping[str, Any], ocurrido: datetime, **metadata: Any) -> Event:
        """Check the transition, apply the event and queue it for the event store."""
        self._check(tipo)
        event = Event(self.id, self.version + 1, tipo, dict(datos), ocurrido, metadata)
        self._apply(event)
        self.pending.append(event)
        return event

    def _check(self, tipo: Tipo) -> None:
        if self.version == 0:
            if tipo is not Tipo.RESERVA_SOLICITADA:
                raise InvalidTransition(f"a reservation's stream starts with ReservaSolicitada, not {tipo}")
            return
        if tipo is Tipo.RESERVA_SOLICITADA:
            raise InvalidTransition(f"reservation {self.id} was already requested")
        if self.estado in (Estado.FALLIDA, Estado.CANCELADA):
            raise InvalidTransition(f"reservation {self.id} is {self.estado}: nothing more can happen to it")
        if self.estado is Estado.CONFIRMADA:
            allowed = {
                Tipo.CANCELACION_SOLICITADA,
                Tipo.COMPENSACION_REINTENTADA,
                Tipo.ENTRADAS_LIBERADAS,
                Tipo.PAGO_REEMBOLSADO,
                Tipo.COMPRA_ANULADA,
                Tipo.RESERVA_CANCELADA,
            }
            if tipo is Tipo.CANCELACION_SOLICITADA and self.cancelando:
                raise InvalidTransition(f"reservation {self.id} is already being cancelled")
            if tipo not in allowed or (tipo is not Tipo.CANCELACION_SOLICITADA and not self.cancelando):
                raise InvalidTransition(f"reservation {self.id} is CONFIRMADA: {tipo} is not allowed")
            return
        # PENDIENTE
        if tipo in (Tipo.CANCELACION_SOLICITADA, Tipo.RESERVA_CANCELADA):
            raise InvalidTransition(f"reservation {self.id} is PENDIENTE: only a CONFIRMADA one can be cancelled")
        # A charge is the ledger's fact, not a step going forward: the payment's undo records one the log lacks
        # (charged behind it: an answer lost, an owner that lost the lease) before its refund, while compensating.
        if self.compensando and tipo is not Tipo.PAGO_PROCESADO and tipo in (
            Tipo.PASO_INICIADO,
            *FORWARD_OUTCOMES,
            Tipo.RESERVA_CONFIRMADA,
            Tipo.COMPENSACION_INICIADA,
        ):
            raise InvalidTransition(f"reservation {self.id} is being compensated: {tipo} is not allowed")
        if tipo is Tipo.RESERVA_FALLIDA and not self.compensando:
            raise InvalidTransition(f"reservation {self.id} must be compensated before it fails")

    def _apply(self, event: Event) -> None:
        d = event.datos
        t = event.tipo
        if t is Tipo.RESERVA_SOLICITADA:
            self.usuario_id = d["usuario_id"]
            self.evento_id = d["evento_id"]
            self.cantidad = int(d["cantidad"])
            self.asientos = tuple(d.get("asientos", ()))
            self.medio_pago = d.get("medio_pago", "")
            self.idempotency_key = d.get("idempotency_key", "")
            self.estado = Estado.PENDIENTE
            self.creada = event.ocurrido
        elif t is Tipo.DATOS_VALIDADOS:
            self.monto = int(d["monto"])
            self.moneda = d["moneda"]
        elif t is Tipo.PASO_INICIADO:
            if d["paso"] not in self.pasos_iniciados:
                self.pasos_iniciados.append(d["paso"])
        elif t is Tipo.PAGO_PROCESADO:
            self.pagos.append(Pago(d["pago_id"], TipoPago.CARGO, int(d["monto"]), event.ocurrido))
        elif t is Tipo.PAGO_REEMBOLSADO:
            if d.get("pago_id"):  # without one, the compensation found nothing charged to give back
                    self.pagos.append(Pago(d["pago_id"], TipoPago.REEMBOLSO, int(d["monto"]), event.ocurrido))
        elif t is Tipo.PAGO_RECHAZADO:
            self.motivo = d.get("motivo", "")
            self.razon = d.get("razon", "")
        elif t is Tipo.RESERVA_CONFIRMADA:
            self.estado = Estado.CONFIRMADA
        elif t is Tipo.COMPENSACION_INICIADA:
            self.compensando = True
            self.pasos_a_deshacer = list(d["pasos"]) if "pasos" in d else None
            self._failure(d)
        elif t is Tipo.RESERVA_FALLIDA:
            self.estado = Estado.FALLIDA
            self._failure(d)
        elif t is Tipo.CANCELACION_SOLICITADA:
            self.cancelando = True
            self.motivo = d.get("motivo", "cancelada por el usuario")
        elif t is Tipo.RESERVA_CANCELADA:
            self.estado = Estado.CANCELADA
            self.cancelando = False
        self.tipos.add(t)
        self.version = event.version
        self.actualizada = event.ocurrido

    def _failure(self, d: Mapping[str, Any]) -> None:
        self.motivo = d.get("motivo", self.motivo)
        self.razon = d.get("razon", self.razon)
        self.codigo = d.get("codigo", self.codigo)
        self.detalle = dict(d.get("detalle", self.detalle))
