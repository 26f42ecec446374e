"""What the eventos tests that build the service without a server need: its page tokens and reply budgets."""

from __future__ import annotations

from eventos.repository import EventoRepository
from eventos.service import EventoService
from eventos.servicer import to_asiento, to_proto
from infra.limits import DEFAULT_MAX_MESSAGE_BYTES, ReplyBudget
from infra.pagination import PageTokens

TOKENS = PageTokens(b"eventos-scale-test-page-token-k!")
BUDGET = ReplyBudget.of_messages(DEFAULT_MAX_MESSAGE_BYTES, to_proto)
SEAT_BUDGET = ReplyBudget.of_messages(DEFAULT_MAX_MESSAGE_BYTES, to_asiento)


def service_of(repository: EventoRepository) -> EventoService:
    """The service as the server builds it, on `repository`."""
    return EventoService(repository, TOKENS, BUDGET, SEAT_BUDGET)
