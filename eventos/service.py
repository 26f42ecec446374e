"""The eventos use cases: the catalogue of events and the inventory the purchase saga draws on."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eventos import domain
from eventos.domain import Allocation, Evento, EventoDraft, InventoryChange, ReservaRequest
from eventos.repository import EventoRepository
from infra import pagination
from infra.errors import InvalidArgument, Unavailable
from infra.limits import ReplyBudget, check_length
from infra.pagination import PageTokens

log = logging.getLogger(__name__)

#: How many times a conditional update is retried when the event changed between read and write.
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class Page:
    eventos: list[Evento]
    next_page_token: str


#: A seat of a page of ListAsientos: its label and whether it is available.
Seat = tuple[str, bool]


@dataclass(frozen=True)
class SeatPage:
    asientos: list[Seat]
    next_page_token: str


def _contention(what: str, evento_id: str) -> Unavailable:
    return Unavailable(
        f"{what} kept racing with other changes to evento {evento_id!r}; retry",
        reason="CONTENTION",
        metadata={"evento_id": evento_id},
    )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def _millis(moment: datetime) -> int:
    """Whole milliseconds since the epoch, rounded down (exact: no float)."""
    return (moment - EPOCH) // MILLISECOND


def _from_millis(millis: int) -> datetime:
    return EPOCH + millis * MILLISECOND


class EventoService:
    def __init__(
        self,
        eventos: EventoRepository,
        tokens: PageTokens,
        budget: ReplyBudget[Evento],
        seat_budget: ReplyBudget[Seat],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`budget`, `seat_budget`: the bytes a page of events, or of seats, may take in a reply (infra.limits);
        `clock`: now, which a new date must not precede and which ListEventos starts from by default."""
        self.eventos = eventos
        self.tokens = tokens
        self.budget = budget
        self.seat_budget = seat_budget
        self.clock = clock

    # --- catalogue ---------------------------------------------------------------------------

    async def create(self, draft: EventoDraft) -> Evento:
        evento = await self.eventos.add(domain.validate_new_evento(draft, now=self.clock()))
        log.info("evento created", extra={"evento_id": evento.id, "aforo_total": evento.aforo_total})
        return evento

    async def get(self, evento_id: str, fields: Sequence[str] = domain.READABLE_FIELDS) -> Evento:
        """The event; its seats are read only when `fields` (validated by domain.validate_read_mask) ask for them."""
        domain.validate_id("id", evento_id)
        with_seats = any(f in domain.SEAT_FIELDS for f in fields)
        evento = await self.eventos.get(evento_id, with_seats=with_seats)
        if evento is None:
            raise domain.not_found(evento_id)
        return evento

    async def list(
        self,
        *,
        page_size: int,
        page_token: str,
        lugar: str | None,
        desde: datetime | None,
        hasta: datetime | None,
        incluir_pasados: bool = False,
    ) -> Page:
        """Events by (fecha, id): those from now on unless `incluir_pasados`, within `desde`..`hasta` if given."""
        if lugar is not None:
            check_length("lugar", lugar, domain.MAX_TEXT)
        if desde is not None and hasta is not None and desde > hasta:
            raise InvalidArgument(
                f"desde ({desde.isoformat()}) is after hasta ({hasta.isoformat()})", metadata={"field": "desde"}
            )
        size = pagination.page_size(page_size)
        # Stored dates keep milliseconds: round the bounds inward so they mean the same there.
        if desde is not None:
            try:
                desde = _from_millis(-((EPOCH - desde) // MILLISECOND))
            except OverflowError:  # after the last millisecond a date can hold: no event is that late
                return Page([], "")
        if hasta is not None:
            hasta = _from_millis(_millis(hasta))
        # A token is valid only for the filters it was issued with (upcoming-only is one; its moving now is not).
        bounds = [None if moment is None else _millis(moment) for moment in (desde, hasta)]
        scope = json.dumps(["eventos", lugar, *bounds, *([] if incluir_pasados else ["upcoming"])], separators=(",", ":"))
        if not incluir_pasados:  # what has happened is left out: from now on, or from desde when that is later
            now = _from_millis(_millis(self.clock()))
            desde = now if desde is None or desde < now else desde
        position = self.tokens.decode(page_token, scope)
        after = None
        if position is not None:
            try:
                after = (_from_millis(int(position["f"])), str(position["id"]))
            except (KeyError, TypeError, ValueError, OverflowError, OSError):
                raise pagination.invalid_token("does not hold a position of this listing") from None
        found = await self.eventos.list(lugar=lugar, desde=desde, hasta=hasta, after=after, limit=size + 1)
        # At most `size` events, and no more than fit in the reply's bytes: the next page starts after the last.
        eventos = found[: min(size, self.budget.fitting(found))]
        token = ""
        if len(found) > len(eventos):
            last = eventos[-1]
            token = self.tokens.encode({"f": _millis(last.fecha), "id": last.id}, scope)
        return Page(eventos, token)

    async def list_asientos(self, evento_id: str, *, page_size: int, page_token: str, solo_disponibles: bool) -> SeatPage:
        """A page of the event's seat map, in seat-map order: at most `page_size` seats and the reply's bytes.

        With `solo_disponibles`, one call looks through at most MAX_ASIENTOS_SCAN seats for available ones,
        so a page of a nearly sold-out map may be short (or empty) and still have a next_page_token.
        """
        domain.validate_id("evento_id", evento_id)
        size = pagination.page_size(page_size, domain.DEFAULT_ASIENTOS_PAGE, domain.MAX_ASIENTOS_PAGE)
        scope = json.dumps(["asientos", evento_id, solo_disponibles], separators=(",", ":"))
        position = self.tokens.decode(page_token, scope)
        start = 0 if position is None else position.get("i")
        if type(start) is not int or not 0 <= start <= domain.MAX_ASIENTOS:
            raise pagination.invalid_token("does not hold a position of this seat map")
        found: list[tuple[int, Seat]] = []  # (position in the seat map, seat)
        scanned, total = start, None
        while len(found) < size and scanned - start < domain.MAX_ASIENTOS_SCAN and (total is None or scanned < total):
            window = await self.eventos.seat_window(evento_id, scanned, size if not solo_disponibles else max(size, 500))
            if window is None:
                raise domain.not_found(evento_id)
            total, seats = window
            found += [(scanned + i, seat) for i, seat in enumerate(seats) if seat[1] or not solo_disponibles]
            scanned += len(seats)
            if not seats:
                break
        page = found[: min(size, self.seat_budget.fitting(seat for _, seat in found))]
        after = page[-1][0] + 1 if len(page) < len(found) else scanned  # where the next page starts
        token = self.tokens.encode({"i": after}, scope) if total is not None and after < total else ""
        return SeatPage([seat for _, seat in page], token)

    async def update(self, evento_id: str, draft: EventoDraft, mask: Sequence[str]) -> Evento:
        domain.validate_id("evento.id", evento_id)
        fields = domain.validate_update_mask(mask)
        now = self.clock()
        domain.validate_update(draft, fields, now=now)  # every value but aforo_total, before the event is read
        for _ in range(MAX_ATTEMPTS):
            current = await self.eventos.get(evento_id, primary=True, with_seats=False)
            if current is None:
                raise domain.not_found(evento_id)
            changes = domain.plan_update(current, draft, fields, now=now)
            updated = current
            if changes:
                updated = await self.eventos.update(
                    evento_id, changes, expected_aforo=current.aforo_total, expected_max=current.max_por_usuario
                )
                if updated is None:
                    continue  # gone, capacity or limit changed, or tickets taken meanwhile: judge again on a fresh read
                log.info("evento updated", extra={"evento_id": evento_id, "fields": sorted(changes)})
            if not updated.seated:
                return updated
            # The answer is the whole event, its seat map and available seats included.
            with_seats = await self.eventos.get(evento_id, primary=True)
            if with_seats is None:
                raise domain.not_found(evento_id)
            return with_seats
        raise _contention("UpdateEvento", evento_id)

    async def delete(self, evento_id: str) -> None:
        domain.validate_id("id", evento_id)
        for _ in range(MAX_ATTEMPTS):
            if await self.eventos.delete_if_untaken(evento_id):
                log.info("evento deleted", extra={"evento_id": evento_id})
                return
            current = await self.eventos.get(evento_id, primary=True, with_seats=False)
            if current is None:
                raise domain.not_found(evento_id)
            if current.tomadas > 0:
                raise domain.has_sold_tickets(current)
            # Its tickets were given back between the two calls: try again.
        raise _contention("DeleteEvento", evento_id)

    # --- inventory ---------------------------------------------------------------------------

    async def reservar(self, request: ReservaRequest) -> InventoryChange:
        """Take the tickets of `request` once per reserva_id; a retry of the same request answers what it holds.

        When the event limits tickets per buyer, only within `request.usuario_id`'s allowance
        (LIMIT_PER_BUYER_EXCEEDED otherwise)."""
        request = domain.validate_reserva_request(request)
        for _ in range(MAX_ATTEMPTS):
            taken = await self.eventos.take(request)
            if taken is not None:
                log.info(
                    "entradas taken",
                    extra={
                        "evento_id": request.evento_id,
                        "reserva_id": request.reserva_id,
                        "cantidad": request.cantidad,
                        "asientos": request.asientos,
                        "usuario_id": request.usuario_id,
                        "inventario_version": taken.inventario_version,
                    },
                )
                return taken
            snapshot = await self.eventos.snapshot_for(
                request.evento_id, request.reserva_id, request.asientos, request.usuario_id
            )
            if snapshot is None:
                raise domain.not_found(request.evento_id)
            stock, existing, tombstone = snapshot
            if domain.explain_refusal(stock, request, existing, tombstone is not None) and existing is not None:
                return InventoryChange.of(stock, existing)  # an idempotent retry: what it holds
        raise _contention("ReservarEntradas", request.evento_id)

    async def liberar(self, evento_id: str, reserva_id: str) -> InventoryChange:
        """Give back what reserva_id took, once; afterwards (or if it took nothing) it can take nothing more.

        A repeat answers what was given back; a reserva_id that held nothing answers cantidad 0.
        """
        domain.validate_ids(evento_id, reserva_id)
        for _ in range(MAX_ATTEMPTS):
            snapshot = await self.eventos.snapshot_for(evento_id, reserva_id)
            if snapshot is None:
                raise domain.not_found(evento_id)
            stock, existing, tombstone = snapshot
            if existing is not None:
                given = await self.eventos.give_back(evento_id, existing)
                if given is not None:
                    log.info(
                        "entradas released",
                        extra={
                            "evento_id": evento_id,
                            "reserva_id": reserva_id,
                            "cantidad": existing.cantidad,
                            "inventario_version": given.inventario_version,
                        },
                    )
                    return given
            elif tombstone is not None:
                return InventoryChange.of(stock, tombstone)
            elif await self.eventos.spend(evento_id, reserva_id):
                # It held nothing: the tombstone keeps a ReservarEntradas still in flight from taking anything.
                return InventoryChange.of(stock, Allocation(reserva_id, 0))
            # Released, taken or deleted concurrently: look again.
        raise _contention("LiberarEntradas", evento_id)
