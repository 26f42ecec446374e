"""The README stays true where it can drift from the code: its table of limits is the one the constants make, and
`make help` lists every target of the Makefile. (Its grpcurl examples run in tests/e2e/test_e2e_stack.py.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from eventos import domain as eventos
from infra import limits, pagination, seats
from infra.auth import Role
from infra.ratelimit import DEFAULT_LIMITS
from reservas import domain as reservas
from usuarios import domain as usuarios

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def n(value: int) -> str:
    return f"{value:,}"


def limits_table() -> str:
    """The README's table of limits, made from the constants the services check them with."""
    assert usuarios.MAX_ID == eventos.MAX_ID == reservas.MAX_ID == reservas.MAX_IDEMPOTENCY_KEY == eventos.MAX_RESERVA_ID
    assert eventos.MAX_MASK_PATHS == usuarios.MAX_MASK_PATHS and eventos.MAX_MASK_PATH == usuarios.MAX_MASK_PATH
    assert eventos.MAX_PRECIO == reservas.MAX_PRECIO  # a seat label's cap has one home: infra.seats
    rate = {role: DEFAULT_LIMITS[role] for role in (Role.CLIENTE, Role.ADMIN, Role.SERVICIO)}
    mib = limits.DEFAULT_MAX_MESSAGE_BYTES // (1 << 20)
    rows = [
        ("any id (`id`, `usuario_id`, `evento_id`, ListReservas' filters), `reserva_id`, `idempotency_key`",
         f"{n(usuarios.MAX_ID)} characters"),
        ("usuario: `tipo_documento` / `nro_documento` / `nombre`, `apellido` / `email`",
         f"{usuarios.MAX_TIPO_DOCUMENTO} / {usuarios.MAX_NRO_DOCUMENTO} / {usuarios.MAX_NOMBRE} / "
         f"{usuarios.MAX_EMAIL} characters"),
        ("evento: `nombre`, `lugar` (also ListEventos' `lugar` filter)", f"{eventos.MAX_TEXT} characters"),
        ("evento: `fecha`", "now or later (FECHA_IN_PAST otherwise), on CreateEvento and UpdateEvento"),
        ("evento: `precio` (minor units, e.g. cents)", f"0 to {n(eventos.MAX_PRECIO)}"),
        ("evento: `aforo_total` (also a ReservarEntradas' `cantidad`)", f"1 to {n(eventos.MAX_AFORO)}"),
        ("evento: `max_por_usuario` (tickets per buyer)", "0 (no limit) to `aforo_total`"),
        ("`moneda`", "3 upper-case letters (ISO 4217)"),
        ("seat label (`asientos`, and in reservas' `asientos`)", f"{seats.MAX_SEAT_LABEL} characters"),
        ("seat map (`asientos` and `filas` together)",
         f"{n(eventos.MAX_ASIENTOS)} seats; `filas`: {n(eventos.MAX_FILAS)} rows, `fila` {eventos.MAX_FILA} "
         f"characters, numbers 1 to {n(eventos.MAX_NUMERO)}"),
        ("seats of one ReservarEntradas", n(eventos.MAX_ASIENTOS_POR_RESERVA)),
        ("a purchase (Reservar): `cantidad`", f"1 to {reservas.MAX_CANTIDAD} (one seat per ticket)"),
        ("`medio_pago`", f"{reservas.MAX_MEDIO_PAGO} characters (and one of the known tokens)"),
        ("`read_mask`, `update_mask`", f"{eventos.MAX_MASK_PATHS} paths of at most {eventos.MAX_MASK_PATH} characters"),
        ("`page_size` of a List RPC", f"0 means {pagination.DEFAULT_PAGE_SIZE}; at most {pagination.MAX_PAGE_SIZE} "
         "(more is capped); negative is INVALID_ARGUMENT"),
        ("`page_size` of ListAsientos / GetHistorialReserva",
         f"{n(eventos.DEFAULT_ASIENTOS_PAGE)} by default, at most {n(eventos.MAX_ASIENTOS_PAGE)} / "
         f"{pagination.MAX_PAGE_SIZE} by default and at most"),
        ("`page_token`", f"{n(pagination.MAX_PAGE_TOKEN)} characters"),
        ("a request or an answer", f"{mib} MiB (`GRPC_MAX_MESSAGE_BYTES`, {n(limits.MIN_MAX_MESSAGE_BYTES)} bytes "
         "to 2 GiB); larger requests are RESOURCE_EXHAUSTED"),
        ("calls per identity (`EVENTFLOW_RATE_LIMIT_<ROLE>`)",
         "; ".join(f"{role.value} {n(lim.rate)}/s (bursts of {n(lim.burst)})" for role, lim in rate.items() if lim)
         + "; over it RESOURCE_EXHAUSTED `RATE_LIMITED`"),
    ]  # fmt: skip
    return "\n".join(["| what | limit |", "|---|---|", *(f"| {what} | {limit} |" for what, limit in rows)])


def test_the_readme_limits_table_is_the_one_the_constants_make() -> None:
    assert limits_table() in README.read_text(encoding="utf-8"), (
        "README's table of limits differs from the constants; the table they make:\n" + limits_table()
    )


def test_make_help_lists_every_phony_target() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)[1].split())  # type: ignore[index]
    defined = {name for names in re.findall(r"^([a-z][a-z0-9 -]*):(?!=)", makefile, re.MULTILINE) for name in names.split()}
    assert defined <= phony, f"targets missing from .PHONY: {sorted(defined - phony)}"
    shown = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)  # noqa: S603, S607
    listed = set(re.findall(r"make ([a-z][a-z0-9-]*)", shown.stdout))
    assert phony <= listed, f"make help does not list: {sorted(phony - listed)}"
