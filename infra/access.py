"""Who may call what: one table, the single source of EventFlow's access rules.

Every RPC of the three services has one rule: the roles that may call it and, for a `cliente`, which
part of the request must be its own. What the table does not name is denied, so a new RPC stays closed
until someone writes its rule. The README prints this table (`markdown_table()`; a test keeps them equal).

Ownership, for a cliente (admin and servicio are not bound to a user):
- `own`: a request field (dotted path) that must be the cliente's usuario_id; with `fill_own`, an empty
  one is filled with it (a cliente's ListReservas without a filter lists its own reservations);
- `owned`: a request field naming a reservation that must be the cliente's; the service says whose a
  reservation is (`OwnerLookup`). A reservation of someone else and one that does not exist get the same
  PERMISSION_DENIED, so the answer never tells a cliente whether another user's reservation exists.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from infra.auth import Principal, Role
from infra.errors import PermissionDenied

#: reserva id -> the usuario_id it belongs to, or None when there is no such reservation.
OwnerLookup = Callable[[str], Awaitable[str | None]]

ADMIN, CLIENTE, SERVICIO = Role.ADMIN, Role.CLIENTE, Role.SERVICIO


@dataclass(frozen=True)
class Rule:
    roles: frozenset[Role]
    own: str = ""
    fill_own: bool = False
    owned: str = ""

    def cell(self, role: Role) -> str:
        """How the README's table shows this rule for one role."""
        if role not in self.roles:
            return "no"
        if role is not CLIENTE or not (self.own or self.owned):
            return "yes"
        if self.owned:
            return "own reservations"
        return f"own (`{self.own}`{', empty = own' if self.fill_own else ''})"


def rule(*roles: Role, own: str = "", fill_own: bool = False, owned: str = "") -> Rule:
    return Rule(frozenset(roles), own, fill_own, owned)


_USUARIOS = "/eventflow.usuarios.v1.UsuariosService/"
_EVENTOS = "/eventflow.eventos.v1.EventosService/"
_RESERVAS = "/eventflow.reservas.v1.ReservasService/"

RULES: Mapping[str, Rule] = {
    _USUARIOS + "CreateUsuario": rule(ADMIN),
    _USUARIOS + "GetUsuario": rule(ADMIN, CLIENTE, SERVICIO, own="id"),
    _USUARIOS + "ListUsuarios": rule(ADMIN),
    _USUARIOS + "UpdateUsuario": rule(ADMIN, CLIENTE, own="usuario.id"),
    _USUARIOS + "DeleteUsuario": rule(ADMIN),
    _USUARIOS + "RegistrarCompra": rule(SERVICIO),
    _USUARIOS + "AnularCompra": rule(SERVICIO),
    _EVENTOS + "CreateEvento": rule(ADMIN),
    _EVENTOS + "GetEvento": rule(ADMIN, CLIENTE, SERVICIO),
    _EVENTOS + "ListAsientos": rule(ADMIN, CLIENTE),
    _EVENTOS + "ListEventos": rule(ADMIN, CLIENTE),
    _EVENTOS + "UpdateEvento": rule(ADMIN),
    _EVENTOS + "DeleteEvento": rule(ADMIN),
    _EVENTOS + "ReservarEntradas": rule(SERVICIO),
    _EVENTOS + "LiberarEntradas": rule(SERVICIO),
    _RESERVAS + "Reservar": rule(ADMIN, CLIENTE, own="usuario_id", fill_own=True),
    _RESERVAS + "GetReserva": rule(ADMIN, CLIENTE, owned="id"),
    _RESERVAS + "CancelarReserva": rule(ADMIN, CLIENTE, owned="id"),
    _RESERVAS + "ListReservas": rule(ADMIN, CLIENTE, own="usuario_id", fill_own=True),
    _RESERVAS + "GetHistorialReserva": rule(ADMIN, CLIENTE, owned="reserva_id"),
    _RESERVAS + "GetEstadisticasEvento": rule(ADMIN),
}


def _field(message: Any, path: str) -> tuple[Any, str]:
    """The message holding the last part of a dotted path, and that part's name."""
    *parents, name = path.split(".")
    for part in parents:
        message = getattr(message, part)
    return message, name


class Access:
    """Decides, for the interceptor, whether a principal may make a call (see the module docstring)."""

    def __init__(self, owner_of: OwnerLookup | None = None, rules: Mapping[str, Rule] = RULES) -> None:
        self.owner_of = owner_of
        self.rules = rules

    async def __call__(self, method: str, principal: Principal, request: Any) -> None:
        name = method.rsplit("/", 1)[-1]
        found = self.rules.get(method)
        if found is None:
            raise PermissionDenied(f"{name} has no access rule, so nobody may call it", reason="RPC_NOT_ALLOWED")
        if principal.role not in found.roles:
            raise PermissionDenied(
                f"a {principal.role} token may not call {name}",
                reason="ROLE_NOT_ALLOWED",
                metadata={"role": principal.role, "method": name},
            )
        if principal.role is not CLIENTE:
            return
        if found.own:
            holder, field = _field(request, found.own)
            value = getattr(holder, field)
            if not value and found.fill_own:
                setattr(holder, field, principal.usuario_id)
            elif value != principal.usuario_id:
                raise PermissionDenied(
                    f"a cliente token may call {name} only for its own user ({found.own} must be "
                    f"{principal.usuario_id!r})",
                    reason="NOT_OWNER",
                    metadata={"field": found.own},
                )
        if found.owned:
            holder, field = _field(request, found.owned)
            owner = await self.owner_of(getattr(holder, field)) if self.owner_of and getattr(holder, field) else None
            if owner is None or owner != principal.usuario_id:
                # The same answer for someone else's reservation and for none at all: no existence oracle.
                raise PermissionDenied(
                    f"a cliente token may call {name} only for its own reservations, and {found.owned} names "
                    "none of them",
                    reason="NOT_OWNER",
                    metadata={"field": found.owned},
                )


def markdown_table(rules: Mapping[str, Rule] = RULES) -> str:
    """The table as the README prints it."""
    lines = ["| RPC | admin | cliente | servicio |", "|---|---|---|---|"]
    for method, found in rules.items():
        service, name = method.strip("/").split("/")
        short = service.split(".")[1]
        lines.append(f"| {short} `{name}` | " + " | ".join(found.cell(r) for r in Role) + " |")
    return "\n".join(lines)
