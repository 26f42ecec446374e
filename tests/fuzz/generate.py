"""Calls to every RPC of the three services, generated from their own protobuf descriptors with hypothesis.

`RPCS` walks `<service>_pb2.DESCRIPTOR.services_by_name`: a new RPC, or a new field of a request, is fuzzed
with no change here. `calls(pool, tokens)` is the strategy of one call: which RPC, who calls (a `Caller`),
and the request, built field by field from the request's descriptor. Each field draws from one class of values:

- valid: what a careful client sends: real ids of the running stack (`Pool`), valid emails, future dates,
  cantidad 1-10, seats of the event the same request names, field-mask paths of the message it masks;
- boundary: empty, blank, the usual length limits and one past them, 0, -1, the int32/int64 extremes, the
  Timestamp range's ends, enum numbers nobody defined, repeated fields with duplicated entries;
- hostile: unicode, NUL bytes, control and bidi characters, operator and injection strings, strings of up to
  a megabyte, long lists, ids of another kind of entity, Timestamps out of range, bogus field-mask paths.

A request is `valid` (every field valid), `mutant` (valid but for one to three fields) or `chaos` (each field
from any class, or left unset). The descriptor gives a request's shape; `HINTS`, by field name, say what a
valid value of a field is (a field without a hint gets generic values of its type). Hints see the fields
drawn before them, in proto order, so a request's seats belong to its event and number its cantidad.

Who calls (`Caller`): a valid token of a role the access table (infra/access.py) allows for the RPC (a
cliente's request then names its own user or reservations), a valid token of a role it does not allow, a
cliente naming another user's data, or no, malformed, expired or forged token (tests/fuzz/tokens.py).

One rule keeps the fuzzer from breaking what it checks: with a valid servicio token, the saga's internal
RPCs (those only servicio may call) never name a reservation of the scene. servicio is reservas itself, the
one identity trusted to move tickets and histories for any reservation; used with real reservations, it
would undo real purchases on purpose, which no invariant survives. The fuzzer names reservations of its own
there, and undoes what they took at the end, as the saga's compensations would (tests/fuzz/test_fuzz.py).
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import random
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from eventflow.eventos.v1 import eventos_pb2
from eventflow.reservas.v1 import reservas_pb2
from eventflow.usuarios.v1 import usuarios_pb2
from infra.access import RULES
from infra.auth import Role
from tests.fuzz import tokens as bad_tokens
from tests.fuzz.tokens import Metadata, Tokens

# -- the RPCs ---------------------------------------------------------------------------------------------

MODULES = {"usuarios": usuarios_pb2, "eventos": eventos_pb2, "reservas": reservas_pb2}


@dataclass(frozen=True)
class Rpc:
    service: str  # "eventos": the stack's name of the service that serves it
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @property
    def response_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)


def discover() -> tuple[Rpc, ...]:
    """Every RPC of every service the three packages' descriptors declare."""
    return tuple(
        Rpc(name, method)
        for name, module in MODULES.items()
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    )


RPCS = discover()
#: RPCs only servicio may call: the saga's own steps and compensations.
SERVICIO_ONLY = frozenset(path for path, rule in RULES.items() if rule.roles == {Role.SERVICIO})


# -- what the stack holds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """Real things of the running stack that valid values name; fixed before generation, so a seed repeats."""

    usuarios: tuple[str, ...]
    eventos: tuple[str, ...]
    #: seated events' seat maps
    asientos: Mapping[str, tuple[str, ...]]
    #: reservation id -> the usuario_id it belongs to
    reservas: Mapping[str, str]
    #: what DeleteUsuario and DeleteEvento take (deleting the rest would leave most calls NOT_FOUND)
    disposable_usuarios: tuple[str, ...]
    disposable_eventos: tuple[str, ...]
    page_tokens: tuple[str, ...] = ()

    def ids(self, entity: str) -> tuple[str, ...]:
        return {"usuario": self.usuarios, "evento": self.eventos, "reserva": tuple(self.reservas)}[entity]

    def reservas_of(self, usuario_id: str) -> tuple[str, ...]:
        return tuple(r for r, owner in self.reservas.items() if owner == usuario_id)


# -- who calls --------------------------------------------------------------------------------------------


class Kind(enum.StrEnum):
    VALID = "valid"
    WRONG_ROLE = "wrong-role"
    OTHER_USER = "other-user"  # a cliente naming another user's data
    NONE = "none"
    MALFORMED = "malformed"
    EXPIRED = "expired"
    FORGED = "forged"


#: Callers with no valid token: every call they make must be UNAUTHENTICATED.
UNAUTHENTICATED_KINDS = frozenset({Kind.NONE, Kind.MALFORMED, Kind.EXPIRED, Kind.FORGED})
#: How often each kind calls (a kind that does not apply to an RPC falls back to VALID).
KIND_WEIGHTS = ([Kind.VALID] * 10 + [Kind.WRONG_ROLE] * 2 + [Kind.OTHER_USER] * 2 + [Kind.FORGED] * 3
                + [Kind.NONE, Kind.MALFORMED, Kind.EXPIRED])  # fmt: skip


@dataclass(frozen=True)
class Caller:
    kind: Kind
    variant: str  # the role of a valid token, or how a bad one is bad
    metadata: Metadata
    role: Role | None = None  # of a valid token (VALID, WRONG_ROLE, OTHER_USER)
    usuario_id: str = ""  # of a valid cliente token


def _valid_caller(kind: Kind, role: Role, tokens: Tokens, usuario_id: str = "") -> Caller:
    return Caller(kind, role.value, bad_tokens.bearer(tokens.of(role, usuario_id)), role, usuario_id)


@st.composite
def callers(draw: Any, rpc: Rpc, tokens: Tokens, kind: Kind) -> Caller:
    rule = RULES.get(rpc.path)
    allowed = rule.roles if rule is not None else frozenset()
    if kind is Kind.OTHER_USER and not (rule is not None and Role.CLIENTE in allowed and (rule.own or rule.owned)):
        kind = Kind.VALID
    if kind is Kind.WRONG_ROLE and not set(Role) - allowed:
        kind = Kind.VALID
    if kind is Kind.VALID and not allowed:
        kind = Kind.WRONG_ROLE
    if kind in (Kind.VALID, Kind.WRONG_ROLE, Kind.OTHER_USER):
        roles = {Kind.VALID: allowed, Kind.WRONG_ROLE: set(Role) - allowed, Kind.OTHER_USER: {Role.CLIENTE}}[kind]
        role = draw(st.sampled_from(sorted(roles)))
        usuario_id = draw(st.sampled_from(sorted(tokens.clientes))) if role is Role.CLIENTE else ""
        return _valid_caller(kind, role, tokens, usuario_id)
    strategy = {Kind.NONE: bad_tokens.missing, Kind.MALFORMED: bad_tokens.malformed,
                Kind.EXPIRED: bad_tokens.expired, Kind.FORGED: bad_tokens.forged}[kind]  # fmt: skip
    variant, metadata = draw(strategy(tokens))
    return Caller(kind, variant, metadata)


# -- values -----------------------------------------------------------------------------------------------


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: A field left out of the request.
UNSET: Any = _Unset()

F = FieldDescriptor
INT_RANGES = {
    **dict.fromkeys((F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((F.TYPE_UINT32, F.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((F.TYPE_UINT64, F.TYPE_FIXED64), (0, 2**64 - 1)),
}
TIMESTAMP = "google.protobuf.Timestamp"
FIELD_MASK = "google.protobuf.FieldMask"
#: The ends of the range a Timestamp may hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
TIMESTAMP_MIN, TIMESTAMP_MAX = -62_135_596_800, 253_402_300_799

#: Lengths around the limits a service is likely to have, and one past each.
LENGTHS = (1, 2, 20, 21, 63, 64, 65, 100, 101, 127, 128, 129, 199, 200, 201, 254, 255, 256, 1024, 4096)
#: Strings over the trailers' 16 KiB, over 64 KiB, and over a 1 MiB message.
HUGE = (16_385, 65_537, 1_100_000)
HOSTILE_TEXT = (
    "\x00", "a\x00b", "\x00" * 8, "\u202egnp.exe", "\u200b", "\ufeff", "\r\nX-Injected: 1", "\x1b[31m", "\x7f",
    "null", "None", "undefined", "true", "[]", "{}", "-0", "1e309", "NaN", "Infinity", "9223372036854775808",
    "$where", "$gt", '{"$gt": ""}', '{"$ne": null}', "this.a == 1", "a.b", "$", ".", "..", "../../etc/passwd",
    "%s%s%n", "%(x)s", "{0}", "' OR '1'='1", "'; DROP TABLE usuarios; --", "<script>alert(1)</script>",
    "${jndi:ldap://x/a}", "Ω≈ç√∫", "ﷺ", "𝕿𝖊𝖘𝖙", "👩‍👩‍👧‍👦", "ｔｏｋ＿ｖｉｓａ", "tok_visa\x00", " tok_visa", "TOK_VISA",
    "ObjectId('000000000000000000000000')", "A-1 ", "a-1", "A--1",
)  # fmt: skip
_UNICODE = st.characters(exclude_categories=("Cs",))  # protobuf strings are UTF-8: no lone surrogates
_LETTERS = st.characters(categories=("L",))


def _repeat(sizes: tuple[int, ...], chars: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.builds(lambda n, c: c * n, st.sampled_from(sizes), st.sampled_from(chars))


BOUNDARY_STRINGS = st.one_of(
    st.sampled_from(["", " ", "   ", "\t", "\n", "0", "-1"]),
    _repeat(LENGTHS, ("a", "9", "ñ", "€", "😀")),
)


def hostile_strings(pool: Pool) -> st.SearchStrategy[str]:
    every_id = pool.usuarios + pool.eventos + tuple(pool.reservas)
    return st.one_of(
        st.sampled_from(HOSTILE_TEXT),
        st.text(_UNICODE, max_size=40),
        st.text(st.characters(max_codepoint=0x1F), min_size=1, max_size=8),
        st.sampled_from(every_id).map(lambda i: f" {i} ") | st.sampled_from(every_id).map(str.upper),
        st.sampled_from(every_id),  # an id of another kind of entity (or of the right kind, by chance)
        _repeat(HUGE, ("x", "ñ", "\x00")),
    )


#: Characters a corrupted value gets: separators of tokens and ids, a NUL, multi-byte ones.
_EDIT_CHARS = st.sampled_from([".", "=", "-", "_", " ", "\x00", "ñ", "€", "😀", "\u202e"]) | _UNICODE


@st.composite
def corrupted(draw: Any, valid: st.SearchStrategy[Any]) -> Any:
    """A valid value with one edit: a character inserted, replaced or deleted, cut short, doubled, upper-cased."""
    value = draw(valid)
    if not isinstance(value, str) or not value:
        return value
    i = draw(st.integers(0, len(value) - 1))
    char = draw(_EDIT_CHARS)
    edits = {
        "insert": lambda: value[:i] + char + value[i:],
        "replace": lambda: value[:i] + char + value[i + 1 :],
        "delete": lambda: value[:i] + value[i + 1 :],
        "truncate": lambda: value[:i],
        "double": lambda: value + value,
        "upper": lambda: value.upper(),
    }
    return edits[draw(st.sampled_from(sorted(edits)))]()


def _seat_labels(n: int) -> list[str]:
    """n distinct seat labels: A-1 ... A-100, B-1 ..., or S-0 ... for more than 26 rows of them."""
    if n > 2600:
        return [f"S-{i}" for i in range(n)]
    return [f"{row}-{i}" for row in string.ascii_uppercase for i in range(1, 101)][:n]


def _from_now(days: float) -> int:
    return int(time.time() + days * 86400)


def timestamps(low_days: float, high_days: float) -> st.SearchStrategy[dict[str, int]]:
    """An instant from now + low_days to now + high_days (a Timestamp's fields)."""
    return st.builds(lambda d, n: {"seconds": _from_now(d), "nanos": n},
                     st.floats(low_days, high_days), st.sampled_from([0, 0, 500_000_000]))  # fmt: skip


BOUNDARY_TIMESTAMPS = st.builds(
    lambda s, n: {"seconds": s, "nanos": n},
    st.sampled_from([0, -1, TIMESTAMP_MIN, TIMESTAMP_MAX, TIMESTAMP_MIN - 1, TIMESTAMP_MAX + 1]),
    st.sampled_from([0, 999_999_999]),
)
HOSTILE_TIMESTAMPS = st.builds(lambda s, n: {"seconds": s, "nanos": n},
                               st.integers(-(2**63), 2**63 - 1), st.integers(-(2**31), 2**31 - 1))  # fmt: skip


# -- hints: what a valid value of a field is, by the field's name -------------------------------------------


@dataclass(frozen=True)
class Context:
    rpc: Rpc
    caller: Caller
    pool: Pool
    mode: str  # valid / mutant / chaos
    mutated: frozenset[str] = frozenset()

    @property
    def servicio_internal(self) -> bool:
        """A valid servicio call of the saga's internal RPCs: it must not name a reservation of the scene."""
        return _servicio_internal(self.rpc, self.caller)


def _servicio_internal(rpc: Rpc, caller: Caller) -> bool:
    return caller.kind is Kind.VALID and caller.role is Role.SERVICIO and rpc.path in SERVICIO_ONLY


@dataclass(frozen=True)
class Slot:
    """Where a value goes: the request's field at `path`, and what is drawn of its message so far."""

    ctx: Context
    path: str
    descriptor: FieldDescriptor
    message: Message

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def creating(self) -> bool:
        return self.ctx.rpc.name.startswith("Create")


Hint = Callable[[Slot], st.SearchStrategy[Any]]


def _entity(slot: Slot) -> str:
    """What an `id` field names: the entity of the message holding it (GetEventoRequest, Usuario, ...)."""
    holder = slot.message.DESCRIPTOR.name.lower()
    for entity in ("evento", "reserva", "usuario"):
        if entity in holder:
            return entity
    return {"usuarios": "usuario", "eventos": "evento", "reservas": "reserva"}[slot.ctx.rpc.service]


def _ids(entity: str) -> Hint:
    def hint(slot: Slot) -> st.SearchStrategy[str]:
        pool = slot.ctx.pool
        if slot.ctx.rpc.name.startswith("Delete") and slot.name == "id":
            disposable = pool.disposable_usuarios if entity == "usuario" else pool.disposable_eventos
            return st.sampled_from(disposable)
        if entity == "reserva" and slot.ctx.servicio_internal:
            return scratch_reserva_ids()
        every = pool.ids(entity)
        kept = [i for i in every if i not in pool.disposable_usuarios + pool.disposable_eventos]
        return often(st.sampled_from(kept), st.sampled_from(every))  # now and then one that may be deleted

    return hint


def scratch_reserva_ids() -> st.SearchStrategy[str]:
    """Reservation ids of the fuzzer's own, for its servicio calls (few, so they repeat: idempotency)."""
    return st.integers(0, 50).map(lambda n: f"fuzz-{n}")


def _id_hint(slot: Slot) -> st.SearchStrategy[Any]:
    if slot.creating:
        return st.just(UNSET)  # ids are the server's to make
    return _ids(_entity(slot))(slot)


def _asientos(slot: Slot) -> st.SearchStrategy[Any]:
    """Seats: of the event the request names, as many as its cantidad; a new event's map, as big as its aforo."""
    message = slot.message
    if slot.ctx.rpc.name.startswith("Update"):
        return st.just([])  # a seat map is not updated
    if "aforo_total" in message.DESCRIPTOR.fields_by_name:
        aforo = message.aforo_total
        return st.just([]) | st.just(_seat_labels(aforo)) if 0 < aforo <= 60 else st.just([])
    seats = slot.ctx.pool.asientos.get(getattr(message, "evento_id", ""), ())
    cantidad = getattr(message, "cantidad", 0)
    if not seats or not 0 < cantidad <= len(seats):
        return st.just([])
    return st.lists(st.sampled_from(seats), min_size=cantidad, max_size=cantidad, unique=True)


def often(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int = 4) -> st.SearchStrategy[Any]:
    """`rare` one time in `one_in`, `common` otherwise (st.one_of would draw each half of the time, and
    st.integers favours its lower bound: 1 of 1-6 comes four times in ten)."""
    return st.sampled_from(range(one_in)).flatmap(lambda n: rare if n == 0 else common)


_serial = itertools.count(1)


def _fresh_keys() -> st.SearchStrategy[str]:
    """Keys never used before (hypothesis would draw the same few strings again and again). The number is
    not a choice of hypothesis's, and draws happen in order: the same seed still draws the same keys."""
    return st.from_regex(r"[a-z0-9]{0,6}", fullmatch=True).map(lambda k: f"fuzz-{next(_serial)}-{k}")


def _page_tokens(slot: Slot) -> st.SearchStrategy[str]:
    tokens = slot.ctx.pool.page_tokens
    return st.just("") | st.sampled_from(tokens) if tokens else st.just("")


def _names() -> st.SearchStrategy[str]:
    return st.sampled_from(["Ana", "Martín", "Lucía", "José María", "O'Neill", "Núñez"]) | st.text(
        _LETTERS, min_size=1, max_size=30)  # fmt: skip


HINTS: dict[str, Hint] = {
    "id": _id_hint,
    "usuario_id": _ids("usuario"),
    "evento_id": _ids("evento"),
    "reserva_id": _ids("reserva"),
    "email": lambda s: st.emails() | st.from_regex(r"[a-z]{1,12}(\.[a-z]{1,8})?@example\.(com|org|uy)", fullmatch=True),
    "tipo_documento": lambda s: st.sampled_from(["DNI", "CI", "PASAPORTE", "ci", " dni "]),
    "nro_documento": lambda s: st.from_regex(r"[0-9]{6,9}|[A-Z]{2}[0-9]{6}", fullmatch=True),
    "nombre": lambda s: _names(),
    "apellido": lambda s: _names(),
    "lugar": lambda s: st.sampled_from(["Antel Arena", "Teatro Solís", "Estadio Centenario"]) | _names(),
    "moneda": lambda s: st.sampled_from(["UYU", "USD", "EUR", "ARS", ""]),
    "medio_pago": lambda s: st.sampled_from(["tok_visa"] * 5 + ["tok_declined", "tok_slow", "tok_timeout"]),
    # a key of its own, or now and then one used before: the same purchase again, or another one (refused)
    "idempotency_key": lambda s: often(_fresh_keys(), st.sampled_from(["k-1", "k-2"]), one_in=6),
    "page_token": _page_tokens,
    "page_size": lambda s: st.integers(0, 500),
    "cantidad": lambda s: often(st.integers(1, 3), st.integers(4, 10)),  # small events and seat maps sell out
    "aforo_total": lambda s: st.integers(1, 60) | st.integers(61, 5000),
    "precio": lambda s: st.integers(0, 10**9),
    "asientos": _asientos,
    "fecha": lambda s: timestamps(1, 3 * 365),
    # ListEventos' date range, or a seat row's first and last number (CreateEvento's `filas`)
    "desde": lambda s: timestamps(-365, 30) if s.descriptor.message_type else st.integers(-1, 120),
    "hasta": lambda s: timestamps(30, 3 * 365) if s.descriptor.message_type else st.integers(-1, 120),
    "as_of": lambda s: timestamps(-1, 1),
}
#: Fields the server fills in: a careful client leaves them out.
OUTPUT_ONLY = frozenset({"historial_compras", "entradas_disponibles", "asientos_disponibles", "inventario_version",
                         "con_asientos"})  # fmt: skip


def _ownership(slot: Slot) -> st.SearchStrategy[Any] | None:
    """For a cliente, the field its rule says must be its own: its own (VALID), or someone else's (OTHER_USER)."""
    caller, pool = slot.ctx.caller, slot.ctx.pool
    rule = RULES.get(slot.ctx.rpc.path)
    if caller.role is not Role.CLIENTE or rule is None or slot.path not in (rule.own, rule.owned):
        return None
    mine = caller.kind is Kind.VALID
    if slot.path == rule.own:
        if mine:
            return st.just(caller.usuario_id) | st.just("") if rule.fill_own else st.just(caller.usuario_id)
        others = [u for u in pool.usuarios if u != caller.usuario_id]
        return st.sampled_from(others)
    owned = pool.reservas_of(caller.usuario_id)
    others = [r for r in pool.reservas if r not in owned]
    return st.sampled_from(owned if mine and owned else others)


# -- requests, field by field -----------------------------------------------------------------------------

#: How a request's fields are drawn; VALID comes most often, so that deep paths (the saga) are reached.
MODES = ["valid"] * 9 + ["mutant"] * 8 + ["chaos"] * 3


def leaf_paths(descriptor: Descriptor, prefix: str = "") -> list[str]:
    """Every field's dotted path, a message field's own included (a mutation may drop the whole message)."""
    paths = []
    for f in descriptor.fields:
        path = prefix + f.name
        paths.append(path)
        if f.message_type is not None and f.message_type.full_name not in (TIMESTAMP, FIELD_MASK) and not f.is_repeated:
            paths.extend(leaf_paths(f.message_type, path + "."))
    return paths


def _value_class(draw: Any, slot: Slot) -> str:
    mode = slot.ctx.mode
    if mode == "valid" or mode == "mutant" and slot.path not in slot.ctx.mutated:
        return "valid"
    if mode == "mutant":
        return draw(st.sampled_from(["boundary", "hostile"]))
    return draw(st.sampled_from(["valid", "boundary", "hostile", "unset"]))


def _ints(f: FieldDescriptor, value_class: str) -> st.SearchStrategy[int]:
    low, high = INT_RANGES[f.type]
    if value_class == "valid":
        return st.integers(0, 100)
    if value_class == "boundary":
        edges = {0, 1, max(low, -1), low, low + 1, high, high - 1, min(high, 2**31 - 1), min(high, 2**31)}
        return st.sampled_from(sorted(edges))
    return st.integers(low, high)


def _enums(f: FieldDescriptor, value_class: str) -> st.SearchStrategy[int]:
    numbers = sorted(v.number for v in f.enum_type.values)
    if value_class == "valid":
        return st.sampled_from(numbers)
    if value_class == "boundary":
        return st.sampled_from([numbers[0], numbers[-1] + 1, -1, 2**31 - 1, -(2**31)])
    return st.integers(-(2**31), 2**31 - 1)


def _scalar(slot: Slot, value_class: str) -> st.SearchStrategy[Any]:
    """One value of a scalar field (an element of a repeated one)."""
    f = slot.descriptor
    if f.type == F.TYPE_STRING:
        if value_class == "valid":
            return st.text(_LETTERS, max_size=20)
        return BOUNDARY_STRINGS if value_class == "boundary" else hostile_strings(slot.ctx.pool)
    if f.type in INT_RANGES:
        return _ints(f, value_class)
    if f.type == F.TYPE_ENUM:
        return _enums(f, value_class)
    if f.type == F.TYPE_BOOL:
        return st.booleans()
    if f.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        if value_class == "valid":
            return st.floats(-1e6, 1e6)
        edges = st.sampled_from([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e308])
        return edges | st.floats(width=32 if f.type == F.TYPE_FLOAT else 64)
    if f.type == F.TYPE_BYTES:
        return st.binary(max_size=20 if value_class == "valid" else 200)
    raise NotImplementedError(f"no values for {f.full_name} (type {f.type})")


def _mask_target(slot: Slot) -> Descriptor:
    """What a FieldMask masks: the request's other message field (UpdateEventoRequest.evento), else the reply."""
    holder = slot.message.DESCRIPTOR
    siblings = [f.message_type for f in holder.fields
                if f.message_type is not None and f.message_type.full_name not in (TIMESTAMP, FIELD_MASK)]  # fmt: skip
    return siblings[0] if len(siblings) == 1 else slot.ctx.rpc.method.output_type


def _field_mask(slot: Slot, value_class: str) -> st.SearchStrategy[dict[str, list[str]]]:
    names = [f.name for f in _mask_target(slot).fields]
    if value_class == "valid":
        paths = st.lists(st.sampled_from(names), unique=True, max_size=len(names))
    elif value_class == "boundary":
        paths = st.sampled_from([[], [""], [" "], [names[0], names[0]], names + names])
    else:
        bogus = st.one_of(
            hostile_strings(slot.ctx.pool),
            st.sampled_from(names).map(lambda n: f"{n}.x"),
            st.sampled_from(names).map(str.upper),
            st.sampled_from(["*", "id.", ".id", "a.b.c", "evento.nombre", "usuario.email", "__class__", "_id"]),
        )
        paths = st.lists(bogus | st.sampled_from(names), min_size=1, max_size=6) | st.just(["x"] * 2000)
    return paths.map(lambda p: {"paths": p})


def _timestamp(slot: Slot, value_class: str) -> st.SearchStrategy[dict[str, int]]:
    if value_class == "valid":
        hint = HINTS.get(slot.name)
        return hint(slot) if hint is not None else timestamps(-30, 30)
    return BOUNDARY_TIMESTAMPS if value_class == "boundary" else HOSTILE_TIMESTAMPS


def _protect(slot: Slot, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A valid servicio call to a saga-internal RPC never names a reservation of the scene (module docstring)."""
    if not (slot.ctx.servicio_internal and slot.name == "reserva_id"):
        return strategy
    real = slot.ctx.pool.reservas

    def own(value: Any) -> Any:
        if isinstance(value, str) and value.strip() in real:
            return "fuzz-" + hashlib.sha1(value.encode()).hexdigest()[:10]
        return value

    return strategy.map(own)


def _field(draw: Any, slot: Slot) -> Any:
    """The value of one field of the request (UNSET: left out)."""
    f = slot.descriptor
    value_class = _value_class(draw, slot)
    if value_class == "unset":
        return UNSET
    kind = f.message_type.full_name if f.message_type is not None else None
    if kind == TIMESTAMP:
        return draw(_timestamp(slot, value_class))
    if kind == FIELD_MASK:
        return draw(_field_mask(slot, value_class))
    if kind is not None:
        if value_class == "boundary":
            return draw(st.sampled_from([UNSET, {}]))
        mode = "chaos" if value_class == "hostile" else slot.ctx.mode
        sub = Context(slot.ctx.rpc, slot.ctx.caller, slot.ctx.pool, mode, slot.ctx.mutated)
        built = _message(draw, sub, f.message_type, slot.path + ".")
        return [built] if f.is_repeated else built
    if value_class == "valid":
        owned = _ownership(slot)
        if owned is not None:
            return draw(owned)
        if slot.name in OUTPUT_ONLY:
            return UNSET
        hint = HINTS.get(slot.name)
        if hint is not None:
            return draw(_protect(slot, hint(slot)))
        element = _scalar(slot, "valid")
        return draw(st.lists(element, max_size=4) if f.is_repeated else element)
    element = _scalar(slot, value_class)
    hint = HINTS.get(slot.name)
    if value_class == "hostile" and f.type == F.TYPE_STRING and hint is not None and not f.is_repeated:
        if draw(st.booleans()):  # half of the time, a valid value with an edit: what gets past a first check
            element = corrupted(hint(slot))
    element = _protect(slot, element)
    if not f.is_repeated:
        return draw(element)
    if value_class == "boundary":  # empty, one, or duplicated entries
        valid = HINTS.get(slot.name, lambda s: st.lists(_scalar(s, "valid"), min_size=1, max_size=3))(slot)
        return draw(st.one_of(st.just([]), st.lists(element, min_size=1, max_size=3),
                              valid.map(lambda v: list(v) + list(v[:1]) if isinstance(v, list) else v)))  # fmt: skip
    short = st.sampled_from(["A-1", "a", ""])
    return draw(st.one_of(
        st.lists(element, max_size=6),
        st.integers(1000, 5000).map(_seat_labels),
        st.builds(lambda n, s: [s] * n, st.sampled_from([2, 1000, 60_000]), short),
        st.just(_seat_labels(50_001)),
    ))  # fmt: skip


def _assign(message: Message, f: FieldDescriptor, value: Any) -> None:
    if f.message_type is not None:
        target = getattr(message, f.name)
        if f.is_repeated:
            for item in value:
                target.add().CopyFrom(item)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            target.SetInParent()
            for name, v in value.items():
                if isinstance(v, list):
                    getattr(target, name).extend(v)
                else:
                    setattr(target, name, v)
    elif f.is_repeated:
        getattr(message, f.name).extend(value)
    else:
        setattr(message, f.name, value)


def _message(draw: Any, ctx: Context, descriptor: Descriptor, prefix: str = "") -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    for f in descriptor.fields:  # in proto order: a hint sees the fields before it
        value = _field(draw, Slot(ctx, prefix + f.name, f, message))
        if value is not UNSET:
            _assign(message, f, value)
    return message


@st.composite
def requests(draw: Any, rpc: Rpc, caller: Caller, pool: Pool, mode: str) -> Message:
    mutated: frozenset[str] = frozenset()
    paths = leaf_paths(rpc.method.input_type)
    if mode == "mutant" and paths:
        mutated = frozenset(draw(st.sets(st.sampled_from(paths), min_size=1, max_size=min(3, len(paths)))))
    return _message(draw, Context(rpc, caller, pool, mode, mutated), rpc.method.input_type)


# -- calls ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    rpc: Rpc
    caller: Caller
    mode: str
    request: Message = field(repr=False)

    @property
    def servicio_internal(self) -> bool:
        """A valid servicio call to one of the saga's internal RPCs (see the module docstring)."""
        return _servicio_internal(self.rpc, self.caller)


@st.composite
def calls(draw: Any, pool: Pool, tokens: Tokens, rpcs: tuple[Rpc, ...] = RPCS) -> Call:
    """One call: which RPC, who calls (`KIND_WEIGHTS`), how its request is drawn (`MODES`), token and request.

    The three choices are made by a `random.Random` seeded with a drawn 64-bit number: hypothesis favours the
    first entries of a list it samples (which suits shrinking), and would leave some RPCs and kinds of caller
    almost never called; a seeded Random picks evenly by weight, and the same seed still draws the same calls.
    """
    rng = random.Random(draw(st.integers(0, 2**64 - 1)))
    rpc, kind, mode = rng.choice(rpcs), rng.choice(KIND_WEIGHTS), rng.choice(MODES)
    caller = draw(callers(rpc, tokens, kind))
    return Call(rpc, caller, mode, draw(requests(rpc, caller, pool, mode)))
