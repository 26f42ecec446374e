"""The eventos domain: events, their inventory, and the rules that guard it. No I/O here.

An event has a capacity (`aforo_total`) and, optionally, a seat map (`asientos`). Tickets are
taken by reservations: each `reserva_id` takes tickets at most once (an `Allocation`) and gives
them back at most once; once given back, the `reserva_id` is spent and can never take tickets
again. The invariant every operation keeps, under any concurrency:

    0 <= entradas_disponibles <= aforo_total
    entradas_disponibles + sum(cantidad of the active allocations) == aforo_total
    a seat belongs to at most one active allocation, and is available iff it belongs to none

Every change of an event's inventory (a take, a give-back, a new capacity) increments its
`inventario_version`, so a cache of it elsewhere can tell the newer of two answers.

An event may limit the tickets one buyer holds (`max_por_usuario`, 0: no limit), across all of
that buyer's reservations of it, against scalpers and bots. A take names its buyer (`usuario_id`);
the tickets each buyer holds are counted by the same operations that take and give them back, so
the limit holds under any concurrency: a take that would leave its buyer above the limit takes
nothing, and a give-back (a cancellation, a compensation) gives the allowance back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from infra.errors import FailedPrecondition, InvalidArgument, NotFound, shorten
from infra.limits import check_count, check_length, too_long
from infra.seats import MAX_SEAT_LABEL, check_seats, check_seats_fit

# --- caps: the longest value of every field a request carries (issue 8) --------------------------
# Checked before anything else is done with a value; the error names the field and its cap, and never
# echoes more than a short prefix of the value. page_token's cap is the same everywhere (infra.pagination).
#: An event's id (server-generated: 24 hex digits) wherever a request names one.
MAX_ID = 128
#: nombre and lugar (also ListEventos' lugar filter).
MAX_TEXT = 200
#: Seats of one seat map: CreateEvento writes them in one go, a take reads none of them.
MAX_ASIENTOS = 50_000
#: Seats one ReservarEntradas names (a purchase in reservas names at most 10).
MAX_ASIENTOS_POR_RESERVA = 100
#: Rows of numbered seats (`filas`) in one CreateEvento, a row's name, and the highest seat number.
MAX_FILAS = 1_000
MAX_FILA = 10
MAX_NUMERO = 99_999
#: Seats per ListAsientos page: the default, the most (a page is also bounded by bytes), and how many seats
#: one call looks through for the available ones (a page may then be short, even empty, with a next token).
DEFAULT_ASIENTOS_PAGE = 1_000
MAX_ASIENTOS_PAGE = 5_000
MAX_ASIENTOS_SCAN = 5_000
MAX_RESERVA_ID = 128
#: The buyer a take names (ReservarEntradas' usuario_id).
MAX_USUARIO_ID = 128
#: read_mask and update_mask: how many paths, and how long each.
MAX_MASK_PATHS = 16
MAX_MASK_PATH = 64
#: How many labels an error message lists (the rest are counted).
SHOWN_LABELS = 10
MAX_INT32 = 2**31 - 1

# --- money and counts: bounded so that no amount or total overflows an int64 (issue 8) ------------------
MAX_INT64 = 2**63 - 1
#: A ticket's price, in minor units (10,000,000.00 of a currency).
MAX_PRECIO = 10**9
#: An event's capacity (more than any stadium or festival); also the most tickets one take may ask for.
MAX_AFORO = 10_000_000
#: The most an event can ever collect: every ticket at the highest price (the read models add amounts up).
MAX_RECAUDADO = MAX_PRECIO * MAX_AFORO  # 10**16, far inside an int64
DEFAULT_MONEDA = "UYU"
_MONEDA = re.compile(r"[A-Z]{3}")

#: Fields UpdateEvento may change; an empty mask means all of them.
UPDATABLE_FIELDS = ("nombre", "fecha", "lugar", "aforo_total", "precio", "moneda", "max_por_usuario")
#: Fields of Evento that no update may name.
READ_ONLY_FIELDS = (
    "id", "entradas_disponibles", "asientos", "asientos_disponibles", "inventario_version", "con_asientos", "filas",
)  # fmt: skip
#: Every field of Evento, in proto order: what GetEvento's read_mask may name (empty means all).
READABLE_FIELDS = (
    "id", "nombre", "fecha", "lugar", "aforo_total", "entradas_disponibles", "precio", "moneda",
    "asientos", "asientos_disponibles", "inventario_version", "con_asientos", "max_por_usuario",
)  # fmt: skip
#: The fields that cost a read of the event's seats (O(seats)); every other one is in the event itself.
SEAT_FIELDS = ("asientos", "asientos_disponibles")


# Domain errors. Each one subclasses the infra error that fixes its gRPC status code (the
# ErrorMappingInterceptor looks codes up along the class hierarchy), so this list is the
# service's whole error table: one class, one reason, one status code.


class EventoNotFound(NotFound):
    reason = "EVENTO_NOT_FOUND"


class UnknownSeat(InvalidArgument):
    reason = "UNKNOWN_SEAT"


class InvalidUpdateMask(InvalidArgument):
    reason = "INVALID_UPDATE_MASK"


class InvalidReadMask(InvalidArgument):
    reason = "INVALID_READ_MASK"


class FechaInPast(InvalidArgument):
    reason = "FECHA_IN_PAST"


class SoldOut(FailedPrecondition):
    reason = "SOLD_OUT"


class SeatTaken(FailedPrecondition):
    reason = "SEAT_TAKEN"


class ReservaMismatch(FailedPrecondition):
    reason = "RESERVA_MISMATCH"


class ReservaReleased(FailedPrecondition):
    reason = "RESERVA_RELEASED"


class CapacityBelowSold(FailedPrecondition):
    reason = "CAPACITY_BELOW_SOLD"


class SeatedEvent(FailedPrecondition):
    reason = "SEATED_EVENT"


class SeatMapTooLarge(FailedPrecondition):
    reason = "SEAT_MAP_TOO_LARGE"


class HasSoldTickets(FailedPrecondition):
    reason = "HAS_SOLD_TICKETS"


class LimitPerBuyerExceeded(FailedPrecondition):
    reason = "LIMIT_PER_BUYER_EXCEEDED"


def invalid(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", metadata={"field": field})


def shown(labels: Sequence[str]) -> str:
    """Labels for an error message: the first few, and how many more."""
    listed = ", ".join(labels[:SHOWN_LABELS])
    return listed if len(labels) <= SHOWN_LABELS else f"{listed} and {len(labels) - SHOWN_LABELS} more"


def validate_id(field: str, value: str) -> str:
    """An event's id as a request names it: required, at most MAX_ID characters (unknown ones are NOT_FOUND)."""
    if not value:
        raise invalid(field, "must not be empty")
    check_length(field, value, MAX_ID)
    return value


def validate_mask(field: str, paths: Sequence[str]) -> None:
    """The caps of a field mask (read_mask, update_mask): a few short paths."""
    check_count(field, paths, MAX_MASK_PATHS, "paths")
    for path in paths:
        if len(path) > MAX_MASK_PATH:
            raise too_long(f"{field} paths", MAX_MASK_PATH, len(path))


def not_found(evento_id: str) -> EventoNotFound:
    return EventoNotFound(f"no evento with id {evento_id!r}", metadata={"evento_id": evento_id})


@dataclass(frozen=True)
class Evento:
    id: str
    nombre: str
    fecha: datetime
    lugar: str
    aforo_total: int
    entradas_disponibles: int
    precio: int
    moneda: str
    #: The seat map; empty when the event has none, or when it was not read (see `con_asientos`).
    asientos: tuple[str, ...] = ()
    #: In seat-map order.
    asientos_disponibles: tuple[str, ...] = ()
    #: Whether the event has a seat map, known even when the seats were not read.
    con_asientos: bool = False
    inventario_version: int = 0
    #: The most tickets one buyer may hold, across its reservations; 0: no limit.
    max_por_usuario: int = 0

    @property
    def seated(self) -> bool:
        return self.con_asientos or bool(self.asientos)

    @property
    def tomadas(self) -> int:
        """Tickets sold or held by reservations."""
        return self.aforo_total - self.entradas_disponibles


@dataclass(frozen=True)
class EventoDraft:
    """Values a client sent for an event, not yet validated. `fecha` is None when not set."""

    nombre: str = ""
    fecha: datetime | None = None
    lugar: str = ""
    aforo_total: int = 0
    precio: int = 0
    moneda: str = ""
    asientos: tuple[str, ...] = ()
    filas: tuple[FilaAsientos, ...] = ()
    max_por_usuario: int = 0


@dataclass(frozen=True)
class FilaAsientos:
    """A row of numbered seats: the labels "<fila>-<desde>" to "<fila>-<hasta>" (a compact seat map)."""

    fila: str
    desde: int
    hasta: int

    @property
    def size(self) -> int:
        return self.hasta - self.desde + 1


@dataclass(frozen=True)
class NewEvento:
    """A validated event to create; every ticket (and seat) starts available."""

    nombre: str
    fecha: datetime
    lugar: str
    aforo_total: int
    precio: int
    moneda: str
    asientos: tuple[str, ...]
    max_por_usuario: int = 0


@dataclass(frozen=True)
class Allocation:
    """What one reservation took from one event, and for which buyer ("" when the take named none)."""

    reserva_id: str
    cantidad: int
    asientos: tuple[str, ...] = ()
    usuario_id: str = ""

    def same_request(self, cantidad: int, asientos: Iterable[str], usuario_id: str = "") -> bool:
        """Whether a take asks for what this allocation holds (a buyer is compared only when both name one:
        takes stored before buyers were named, and callers that name none, are the same buyer's)."""
        same_buyer = not (self.usuario_id and usuario_id) or self.usuario_id == usuario_id
        return self.cantidad == cantidad and set(self.asientos) == set(asientos) and same_buyer


@dataclass(frozen=True)
class Stock:
    """What a take is judged against: an event's counter and version, and the seats it asks for.

    `holders` has an entry for each requested seat that is in the seat map: the reserva_id
    holding it, or None when it is available. A requested seat missing from it is unknown.
    `compradas`: the tickets the take's buyer holds of the event, judged against `max_por_usuario`.
    """

    evento_id: str
    entradas_disponibles: int
    inventario_version: int
    con_asientos: bool
    holders: Mapping[str, str | None]
    max_por_usuario: int = 0
    compradas: int = 0


@dataclass(frozen=True)
class InventoryChange:
    """The answer of ReservarEntradas / LiberarEntradas: what one reservation holds (or gave back),
    and the event's counter and inventory version when it was answered."""

    evento_id: str
    reserva_id: str
    cantidad: int
    asientos: tuple[str, ...]
    entradas_disponibles: int
    inventario_version: int

    @classmethod
    def of(cls, stock: Stock, allocation: Allocation) -> InventoryChange:
        return cls(
            stock.evento_id,
            allocation.reserva_id,
            allocation.cantidad,
            allocation.asientos,
            stock.entradas_disponibles,
            stock.inventario_version,
        )


@dataclass(frozen=True)
class ReservaRequest:
    evento_id: str
    reserva_id: str
    cantidad: int
    asientos: tuple[str, ...] = ()
    #: The buyer, counted against the event's max_por_usuario (required when it has one).
    usuario_id: str = ""


# --- field rules ---------------------------------------------------------------------------


def validate_text(field: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise invalid(field, "must not be empty")
    if len(value) > MAX_TEXT:
        raise invalid(field, f"must be at most {MAX_TEXT} characters, got {len(value)}")
    return value


def validate_fecha(value: datetime | None, now: datetime) -> datetime:
    """An event's date: required, and not before `now` (an event is created or moved to take place, not to have
    taken place; one that has happened is in the past by time passing, and nobody can buy for it)."""
    if value is None:
        raise invalid("fecha", "is required (an RFC 3339 timestamp such as 2030-03-14T21:00:00Z)")
    # MongoDB keeps milliseconds; truncate now so what we answer is what we stored.
    fecha = value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)
    if fecha < now:
        raise FechaInPast(
            f"fecha: {fecha.isoformat()} is in the past (now: {now.astimezone(UTC).isoformat(timespec='seconds')}); "
            "an event takes place in the future",
            metadata={"field": "fecha", "now": now.astimezone(UTC).isoformat(timespec="seconds")},
        )
    return fecha


def validate_precio(value: int) -> int:
    if value < 0:
        raise invalid("precio", f"must be 0 or more (minor units, e.g. cents), got {value}")
    if value > MAX_PRECIO:
        raise invalid("precio", f"must be at most {MAX_PRECIO} (minor units, e.g. cents), got {value}")
    return value


def validate_moneda(value: str) -> str:
    value = value.strip()
    if not value:
        return DEFAULT_MONEDA
    if not _MONEDA.fullmatch(value):
        raise invalid(
            "moneda", f"must be an ISO 4217 code of three upper-case letters such as UYU or USD, got {shorten(value, 8)!r}"
        )
    return value


def validate_aforo(value: int) -> int:
    if value <= 0:
        raise invalid("aforo_total", f"must be more than 0, got {value}")
    if value > MAX_AFORO:
        raise invalid("aforo_total", f"must be at most {MAX_AFORO}, got {value}")
    return value


def validate_max_por_usuario(value: int, aforo: int) -> int:
    if value < 0:
        raise invalid("max_por_usuario", f"must be 0 (no limit) or more, got {value}")
    if value > aforo:
        raise invalid("max_por_usuario", f"must be at most aforo_total ({aforo}), got {value}")
    return value


def within_limit(max_por_usuario: int, compradas: int, cantidad: int) -> bool:
    """Whether a buyer holding `compradas` tickets may take `cantidad` more (0: the event has no limit)."""
    return max_por_usuario == 0 or compradas + cantidad <= max_por_usuario


def validate_seat_map(asientos: Sequence[str]) -> tuple[str, ...]:
    if len(asientos) > MAX_ASIENTOS:
        raise invalid("asientos", f"a seat map has at most {MAX_ASIENTOS} seats, got {len(asientos)}")
    labels = tuple(label.strip() for label in asientos)
    seen: set[str] = set()
    for label in labels:
        if not label:
            raise invalid("asientos", "seat labels must not be empty")
        if len(label) > MAX_SEAT_LABEL:
            raise too_long("asientos", MAX_SEAT_LABEL, len(label), "characters per seat label")
        if label in seen:
            raise invalid("asientos", f"seat label {label!r} appears more than once (in asientos or filas)")
        seen.add(label)
    return labels


def validate_filas(filas: Sequence[FilaAsientos], before: int) -> tuple[str, ...]:
    """The labels of rows of numbered seats, row by row, after `before` seats given as labels.

    The rows are judged before a label is made, so no request makes more than MAX_ASIENTOS of them.
    """
    check_count("filas", filas, MAX_FILAS, "rows")
    total = before
    for fila in filas:
        if not fila.fila.strip():
            raise invalid("filas", "a row's fila must not be empty")
        check_length("filas", fila.fila, MAX_FILA)
        if not 1 <= fila.desde <= fila.hasta <= MAX_NUMERO:
            raise invalid(
                "filas",
                f"row {fila.fila.strip()!r} must have 1 <= desde <= hasta <= {MAX_NUMERO}, got {fila.desde} to {fila.hasta}",
            )
        total += fila.size
        if total > MAX_ASIENTOS:
            raise invalid("filas", f"a seat map has at most {MAX_ASIENTOS} seats (asientos and filas together)")
    return tuple(f"{fila.fila.strip()}-{n}" for fila in filas for n in range(fila.desde, fila.hasta + 1))


def validate_new_evento(draft: EventoDraft, *, now: datetime) -> NewEvento:
    """The rules of CreateEvento. With a seat map (labels, then rows), aforo_total is its length (0: derive it)."""
    check_count("asientos", draft.asientos, MAX_ASIENTOS, "seats")
    asientos = validate_seat_map((*draft.asientos, *validate_filas(draft.filas, len(draft.asientos))))
    if asientos:
        if draft.aforo_total not in (0, len(asientos)):
            raise invalid(
                "aforo_total",
                f"with a seat map it must be the number of seats ({len(asientos)}) or 0, got {draft.aforo_total}",
            )
        aforo = len(asientos)
    else:
        aforo = validate_aforo(draft.aforo_total)
    return NewEvento(
        nombre=validate_text("nombre", draft.nombre),
        fecha=validate_fecha(draft.fecha, now),
        lugar=validate_text("lugar", draft.lugar),
        aforo_total=aforo,
        precio=validate_precio(draft.precio),
        moneda=validate_moneda(draft.moneda),
        asientos=asientos,
        max_por_usuario=validate_max_por_usuario(draft.max_por_usuario, aforo),
    )


# --- updates -------------------------------------------------------------------------------


def validate_update_mask(paths: Sequence[str]) -> tuple[str, ...]:
    """The fields to update, in a stable order; an empty mask means every updatable field."""
    validate_mask("update_mask", paths)
    if not paths:
        return UPDATABLE_FIELDS
    for path in paths:
        if path in READ_ONLY_FIELDS:
            raise InvalidUpdateMask(
                f"update_mask: {path!r} cannot be updated (updatable: {', '.join(UPDATABLE_FIELDS)})",
                metadata={"field": "update_mask", "path": path},
            )
        if path not in UPDATABLE_FIELDS:
            raise InvalidUpdateMask(
                f"update_mask: unknown field {path!r} (updatable: {', '.join(UPDATABLE_FIELDS)})",
                metadata={"field": "update_mask", "path": path},
            )
    return tuple(f for f in UPDATABLE_FIELDS if f in paths)


def validate_read_mask(paths: Sequence[str]) -> tuple[str, ...]:
    """The fields GetEvento answers, in proto order; an empty mask means all of them."""
    validate_mask("read_mask", paths)
    if not paths:
        return READABLE_FIELDS
    for path in paths:
        if path not in READABLE_FIELDS:
            raise InvalidReadMask(
                f"read_mask: unknown field {path!r} (readable: {', '.join(READABLE_FIELDS)})",
                metadata={"field": "read_mask", "path": path},
            )
    return tuple(f for f in READABLE_FIELDS if f in paths)


def validate_update(draft: EventoDraft, fields: Sequence[str], *, now: datetime) -> dict[str, object]:
    """The validated new values of `fields`, but aforo_total, whose rules depend on the event (plan_update):
    what can be judged before the event is read."""
    changes: dict[str, object] = {}
    for field in fields:
        if field in ("nombre", "lugar"):
            changes[field] = validate_text(field, getattr(draft, field))
        elif field == "fecha":
            changes[field] = validate_fecha(draft.fecha, now)
        elif field == "precio":
            changes[field] = validate_precio(draft.precio)
        elif field == "moneda":
            changes[field] = validate_moneda(draft.moneda)
    return changes


def plan_update(current: Evento, draft: EventoDraft, fields: Sequence[str], *, now: datetime) -> dict[str, object]:
    """The validated new values of `fields` (aforo_total only when it changes).

    Raises SeatedEvent when the capacity of a seated event would change, and CapacityBelowSold
    when the new capacity is below the tickets already taken in `current` (the repository
    checks that again atomically, since tickets may be taken meanwhile).
    """
    changes = validate_update(draft, fields, now=now)
    for field in fields:
        if field == "aforo_total":
            if current.seated:
                if draft.aforo_total not in (0, current.aforo_total):
                    raise SeatedEvent(
                        f"aforo_total of a seated event is the number of its seats ({current.aforo_total}) "
                        "and cannot change",
                        metadata={"evento_id": current.id, "aforo_total": current.aforo_total},
                    )
                continue
            aforo = validate_aforo(draft.aforo_total)
            if aforo != current.aforo_total:
                check_capacity(current, aforo)
                changes[field] = aforo
    aforo = int(changes.get("aforo_total", current.aforo_total))  # type: ignore[call-overload]
    if "max_por_usuario" in fields:
        # Lowering it below what a buyer holds takes nothing back: that buyer just cannot take more.
        changes["max_por_usuario"] = validate_max_por_usuario(draft.max_por_usuario, aforo)
    elif current.max_por_usuario > aforo:
        raise invalid(
            "aforo_total",
            f"must be at least max_por_usuario ({current.max_por_usuario}), got {aforo}; lower max_por_usuario too",
        )
    return changes


def check_capacity(current: Evento, aforo: int) -> None:
    if aforo < current.tomadas:
        raise capacity_below_sold(current, aforo)


def capacity_below_sold(current: Evento, aforo: int) -> CapacityBelowSold:
    return CapacityBelowSold(
        f"aforo_total cannot be {aforo}: {current.tomadas} tickets are already sold or held",
        metadata={"evento_id": current.id, "aforo_total": aforo, "tomadas": current.tomadas},
    )


def seat_map_too_large(evento: Evento, fields: Sequence[str]) -> SeatMapTooLarge:
    return SeatMapTooLarge(
        f"read_mask: {', '.join(fields)} of evento {evento.id!r} ({evento.aforo_total} seats) do not fit in one "
        "answer: leave them out of read_mask, and read the seats a page at a time with ListAsientos",
        metadata={"evento_id": evento.id, "aforo_total": evento.aforo_total},
    )


def has_sold_tickets(current: Evento) -> HasSoldTickets:
    """Why an event with tickets taken cannot be deleted: its buyers would lose their way to a refund."""
    return HasSoldTickets(
        f"evento {current.id!r} cannot be deleted: {current.tomadas} of its {current.aforo_total} tickets are "
        "sold or held by purchases in flight; cancel those reservations first (a cancellation refunds the buyer "
        "and gives the tickets back), then delete it",
        metadata={"evento_id": current.id, "tomadas": current.tomadas, "aforo_total": current.aforo_total},
    )


# --- reservations --------------------------------------------------------------------------


def validate_ids(evento_id: str, reserva_id: str) -> None:
    validate_id("evento_id", evento_id)
    if not reserva_id:
        raise invalid("reserva_id", "must not be empty")
    check_length("reserva_id", reserva_id, MAX_RESERVA_ID)


def validate_reserva_request(request: ReservaRequest) -> ReservaRequest:
    """The rules that need no event: ids, cantidad >= 1, seats distinct and as many as cantidad."""
    validate_ids(request.evento_id, request.reserva_id)
    if not 1 <= request.cantidad <= MAX_AFORO:
        raise invalid("cantidad", f"must be from 1 to {MAX_AFORO}, got {request.cantidad}")
    check_length("usuario_id", request.usuario_id, MAX_USUARIO_ID)
    check_count("asientos", request.asientos, MAX_ASIENTOS_POR_RESERVA, "seats")
    asientos = check_seats(request.asientos, request.cantidad)
    return ReservaRequest(request.evento_id, request.reserva_id, request.cantidad, asientos, request.usuario_id)


def check_fits_event(stock: Stock, request: ReservaRequest) -> None:
    """The rules that need the event's (immutable) seat map: seats named iff it has one, and in it."""
    check_seats_fit(stock.evento_id, stock.con_asientos, request.asientos, request.cantidad)
    if stock.con_asientos:
        unknown = [label for label in request.asientos if label not in stock.holders]
        if unknown:
            raise UnknownSeat(
                f"asientos: {shown(unknown)} not in the seat map of evento {stock.evento_id!r}",
                metadata={"field": "asientos", "asientos": ",".join(unknown)},
            )


def explain_refusal(stock: Stock | None, request: ReservaRequest, existing: Allocation | None, released: bool) -> bool:
    """Why the atomic take of `request` matched nothing, judged on a fresh read of the event.

    Raises the error the caller should get. Returns True when this reserva_id already took
    exactly these tickets (an idempotent retry: answer what it holds), False when nothing
    explains it any more (the event changed in between: try again).
    """
    if stock is None:
        raise not_found(request.evento_id)
    check_fits_event(stock, request)
    if existing is not None:
        if existing.same_request(request.cantidad, request.asientos, request.usuario_id):
            return True
        raise ReservaMismatch(
            f"reserva_id {request.reserva_id!r} already took {existing.cantidad} tickets"
            + (f" ({shown(existing.asientos)})" if existing.asientos else "")
            + " of this evento; a retry must ask for the same tickets",
            metadata={"reserva_id": request.reserva_id, "cantidad": existing.cantidad},
        )
    if released:
        raise ReservaReleased(
            f"reserva_id {request.reserva_id!r} already gave its tickets back; use a new reserva_id",
            metadata={"reserva_id": request.reserva_id},
        )
    # What a cache of the inventory needs to keep the newest answer (see inventario_version).
    inventory = {"disponibles": stock.entradas_disponibles, "inventario_version": stock.inventario_version}
    if stock.con_asientos:
        taken = [label for label in request.asientos if stock.holders[label] is not None]
        if taken:
            raise SeatTaken(
                f"seats already taken: {shown(taken)}; no seat was taken",
                metadata={"asientos": ",".join(taken), "evento_id": stock.evento_id, **inventory},
            )
    if stock.entradas_disponibles < request.cantidad:
        raise SoldOut(
            f"only {stock.entradas_disponibles} tickets left, {request.cantidad} requested",
            metadata={"evento_id": stock.evento_id, **inventory},
        )
    if stock.max_por_usuario and not request.usuario_id:
        raise invalid("usuario_id", f"evento {stock.evento_id!r} limits the tickets per buyer: name the buyer")
    if not within_limit(stock.max_por_usuario, stock.compradas, request.cantidad):
        raise limit_per_buyer_exceeded(stock, request, inventory)
    return False


def limit_per_buyer_exceeded(
    stock: Stock, request: ReservaRequest, inventory: Mapping[str, int]
) -> LimitPerBuyerExceeded:
    """A take that would leave its buyer above the event's max_por_usuario. Not a sell-out: the metadata
    carries what is left (`disponibles`, `inventario_version`), so a cache of the inventory stays right."""
    left = max(0, stock.max_por_usuario - stock.compradas)
    return LimitPerBuyerExceeded(
        f"evento {stock.evento_id!r} sells at most {stock.max_por_usuario} tickets per buyer; usuario "
        f"{request.usuario_id!r} already has {stock.compradas}, so {request.cantidad} more would exceed it "
        f"({left} more allowed; a cancelled reservation gives its tickets back to the allowance)",
        metadata={
            "evento_id": stock.evento_id,
            "usuario_id": request.usuario_id,
            "max_por_usuario": stock.max_por_usuario,
            "compradas": stock.compradas,
            "solicitadas": request.cantidad,
            **inventory,
        },
    )


def in_seat_map_order(asientos: Sequence[str], available: Iterable[str]) -> tuple[str, ...]:
    free = set(available)
    return tuple(label for label in asientos if label in free)
