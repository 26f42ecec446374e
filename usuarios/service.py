"""The usuarios use cases: validate with the domain rules, then one atomic repository call each.

Takes its repository in the constructor, the concrete MongoDB class, as eventos and reservas take theirs
(Protocols are kept for ports with a second implementation: the saga's, faked in its unit tests). Raises the
domain exceptions of `usuarios.domain`; knows nothing of protobuf or gRPC.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from infra import pagination
from infra.limits import ReplyBudget
from infra.logs import reserva_id_var
from infra.pagination import PageTokens
from usuarios.domain import (
    HasPurchases,
    Usuario,
    UsuarioNotFound,
    new_usuario_id,
    require_id,
    update_fields,
    validate_profile,
    validate_reserva_id,
)
from usuarios.repository import Cursor, DeleteOutcome, UsuarioRepository

log = logging.getLogger(__name__)

#: Page tokens of ListUsuarios are valid for ListUsuarios only.
LIST_SCOPE = "eventflow.usuarios.v1.ListUsuarios"


def encode_cursor(tokens: PageTokens, cursor: Cursor | None) -> str:
    return "" if cursor is None else tokens.encode({"orden": cursor[0], "id": cursor[1]}, LIST_SCOPE)


def decode_cursor(tokens: PageTokens, token: str) -> Cursor | None:
    position = tokens.decode(token, LIST_SCOPE)
    if position is None:
        return None
    orden, last_id = position.get("orden"), position.get("id")
    if type(orden) is not int or not isinstance(last_id, str):
        raise pagination.invalid_token()
    return orden, last_id


class UsuariosService:
    def __init__(self, repository: UsuarioRepository, tokens: PageTokens, budget: ReplyBudget[Usuario]) -> None:
        """`budget`: the bytes a page of usuarios may take in a reply (see infra.limits)."""
        self.repository = repository
        self.tokens = tokens
        self.budget = budget

    async def create_usuario(self, values: Mapping[str, str]) -> Usuario:
        profile = validate_profile(values)
        usuario = await self.repository.add(Usuario(id=new_usuario_id(), **profile))
        log.info("usuario created", extra={"usuario_id": usuario.id})
        return usuario

    async def get_usuario(self, usuario_id: str) -> Usuario:
        require_id(usuario_id, "id")
        usuario = await self.repository.get(usuario_id)
        if usuario is None:
            raise UsuarioNotFound(usuario_id)
        return usuario

    async def list_usuarios(self, page_size: int, page_token: str) -> tuple[list[Usuario], str]:
        """One page, oldest first, and the token of the next page ("" on the last one)."""
        size = pagination.page_size(page_size)
        after = decode_cursor(self.tokens, page_token)
        found = await self.repository.list_page(after, size + 1)
        # At most `size` usuarios, and no more than fit in the reply's bytes: the next page starts after the last.
        page = found[: min(size, self.budget.fitting(usuario for usuario, _ in found))]
        next_cursor = page[-1][1] if len(found) > len(page) else None
        return [usuario for usuario, _ in page], encode_cursor(self.tokens, next_cursor)

    async def update_usuario(self, usuario_id: str, values: Mapping[str, str], mask: Iterable[str]) -> Usuario:
        """Sets the fields the mask names (all updatable ones when it is empty), after validating them."""
        require_id(usuario_id, "usuario.id")
        fields = update_fields(mask)
        changes = validate_profile(values, fields)
        usuario = await self.repository.update(usuario_id, changes)
        if usuario is None:
            raise UsuarioNotFound(usuario_id)
        log.info("usuario updated", extra={"usuario_id": usuario_id, "fields": list(fields)})
        return usuario

    async def delete_usuario(self, usuario_id: str) -> None:
        require_id(usuario_id, "id")
        outcome, compras = await self.repository.delete_if_no_purchases(usuario_id)
        if outcome is DeleteOutcome.NOT_FOUND:
            raise UsuarioNotFound(usuario_id)
        if outcome is DeleteOutcome.HAS_PURCHASES:
            raise HasPurchases(usuario_id, compras)
        log.info("usuario deleted", extra={"usuario_id": usuario_id})

    async def registrar_compra(self, usuario_id: str, reserva_id: str) -> bool:
        """Records a confirmed reservation; recording it again changes nothing. True when this call added it."""
        return await self._change_historial(usuario_id, reserva_id, self.repository.add_compra, "compra registrada")

    async def anular_compra(self, usuario_id: str, reserva_id: str) -> bool:
        """Removes a reservation from the history (the saga's compensation); removing it again changes nothing.
        True when this call removed it."""
        return await self._change_historial(usuario_id, reserva_id, self.repository.remove_compra, "compra anulada")

    async def _change_historial(
        self,
        usuario_id: str,
        reserva_id: str,
        change: Callable[[str, str], Awaitable[bool | None]],
        event: str,
    ) -> bool:
        require_id(usuario_id, "usuario_id")
        reserva_id = validate_reserva_id(reserva_id)
        token = reserva_id_var.set(reserva_id)  # this call's log lines carry the reservation
        try:
            changed = await change(usuario_id, reserva_id)
            if changed is None:
                raise UsuarioNotFound(usuario_id)
            log.info(event, extra={"usuario_id": usuario_id, "changed": changed})
            return changed
        finally:
            reserva_id_var.reset(token)
