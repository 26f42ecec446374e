"""The usuario and its rules. No I/O.

A usuario is a person who buys tickets: an identity document (tipo + número), a
name, an email, and the ids of their confirmed reservations (`historial_compras`).
This module normalizes and validates the profile fields, reads update masks, and
defines the domain exceptions (each with its ErrorInfo reason) the service raises.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from infra.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

TIPOS_DOCUMENTO = ("DNI", "CI", "PASAPORTE")

# --- caps: the longest value of every field a request carries (issue 8) --------------------------
# Checked before anything else is done with a value; the error names the field and its cap, and never
# echoes more than a short prefix of the value. page_token's cap is the same everywhere (infra.pagination).
#: A usuario's id (server-generated: 32 hex digits) wherever a request names one.
MAX_ID = 128
MAX_TIPO_DOCUMENTO = 16
MAX_NRO_DOCUMENTO = 20
MAX_NOMBRE = 100
MAX_EMAIL = 254
MAX_EMAIL_LOCAL_PART = 64
MAX_RESERVA_ID = 128
#: update_mask: how many paths, and how long each.
MAX_MASK_PATHS = 16
MAX_MASK_PATH = 64

#: The profile fields a client sets, in the order they are validated.
UPDATABLE_FIELDS = ("tipo_documento", "nro_documento", "nombre", "apellido", "email")
#: Fields of the Usuario message a client cannot change through UpdateUsuario.
READ_ONLY_FIELDS = ("id", "historial_compras")


# --- exceptions ---------------------------------------------------------------------------------


class ValidationFailed(InvalidArgument):
    """A field breaks a rule; metadata names the field."""

    reason = "VALIDATION_FAILED"

    def __init__(self, field: str, message: str, **metadata: object) -> None:
        super().__init__(message, metadata={"field": field, **metadata})
        self.field = field


class InvalidUpdateMask(InvalidArgument):
    reason = "INVALID_UPDATE_MASK"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message, metadata={"field": "update_mask", "path": path})
        self.path = path


class UsuarioNotFound(NotFound):
    reason = "USUARIO_NOT_FOUND"

    def __init__(self, usuario_id: str) -> None:
        super().__init__(f"no usuario with id {_shown(usuario_id)}", metadata={"usuario_id": usuario_id})
        self.usuario_id = usuario_id


class EmailTaken(AlreadyExists):
    reason = "EMAIL_TAKEN"

    def __init__(self, email: str) -> None:
        super().__init__(
            f"email {_shown(email)} is already used by another usuario", metadata={"field": "email", "email": email}
        )


class DocumentoTaken(AlreadyExists):
    reason = "DOCUMENTO_TAKEN"

    def __init__(self, tipo_documento: str, nro_documento: str) -> None:
        super().__init__(
            f"documento {tipo_documento} {_shown(nro_documento)} is already used by another usuario",
            metadata={"field": "nro_documento", "tipo_documento": tipo_documento, "nro_documento": nro_documento},
        )


class HasPurchases(FailedPrecondition):
    reason = "HAS_PURCHASES"

    def __init__(self, usuario_id: str, compras: int) -> None:
        super().__init__(
            f"usuario {_shown(usuario_id)} has {compras} purchase(s) in historial_compras and cannot be deleted",
            metadata={"usuario_id": usuario_id, "compras": compras},
        )


class PurchaseAnnulled(FailedPrecondition):
    """RegistrarCompra of a reservation whose purchase was annulled: a late write of a saga that was undone."""

    reason = "PURCHASE_ANNULLED"

    def __init__(self, usuario_id: str, reserva_id: str) -> None:
        super().__init__(
            f"the purchase of reservation {_shown(reserva_id)} was annulled for usuario {_shown(usuario_id)}; "
            "it cannot be recorded again",
            metadata={"usuario_id": usuario_id, "reserva_id": reserva_id},
        )


# --- the entity ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usuario:
    id: str
    tipo_documento: str
    nro_documento: str
    nombre: str
    apellido: str
    email: str
    historial_compras: tuple[str, ...] = ()

    def profile(self) -> dict[str, str]:
        """The updatable fields, by name."""
        return {name: getattr(self, name) for name in UPDATABLE_FIELDS}


def new_usuario_id() -> str:
    """Ids are server-generated, opaque to clients."""
    return uuid.uuid4().hex


# --- field rules --------------------------------------------------------------------------------


def check_length(field: str, value: str, limit: int) -> None:
    """The cap of a field (see the caps above): the error names both, never the value."""
    if len(value) > limit:
        raise ValidationFailed(field, f"{field} must be at most {limit} characters, got {len(value)}", max=limit)


def _shown(value: str, limit: int = 40) -> str:
    """A value quoted for an error message, cut short so a huge input does not flood the message."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def normalize_tipo_documento(value: str) -> str:
    check_length("tipo_documento", value, MAX_TIPO_DOCUMENTO)
    tipo = value.strip().upper()
    if tipo not in TIPOS_DOCUMENTO:
        raise ValidationFailed(
            "tipo_documento", f"tipo_documento must be one of {', '.join(TIPOS_DOCUMENTO)}, got {_shown(value)}"
        )
    return tipo


_ALNUM = re.compile(r"[A-Za-z0-9]+")


def normalize_nro_documento(value: str) -> str:
    """Letters and digits only; stored upper case, so 'ab123' and 'AB123' are the same document."""
    nro = value.strip()
    if not nro:
        raise ValidationFailed("nro_documento", "nro_documento is required")
    if len(nro) > MAX_NRO_DOCUMENTO:
        raise ValidationFailed(
            "nro_documento", f"nro_documento must be at most {MAX_NRO_DOCUMENTO} characters, got {len(nro)}"
        )
    if not _ALNUM.fullmatch(nro):
        raise ValidationFailed(
            "nro_documento", f"nro_documento must contain only letters A-Z and digits 0-9, got {_shown(value)}"
        )
    return nro.upper()


def _normalize_name(field: str, value: str) -> str:
    name = value.strip()
    if not name:
        raise ValidationFailed(field, f"{field} is required")
    if len(name) > MAX_NOMBRE:
        raise ValidationFailed(field, f"{field} must be at most {MAX_NOMBRE} characters, got {len(name)}")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        raise ValidationFailed(field, f"{field} must not contain control characters")
    return name


def normalize_nombre(value: str) -> str:
    return _normalize_name("nombre", value)


def normalize_apellido(value: str) -> str:
    return _normalize_name("apellido", value)


# The local part: RFC 5322 "dot-atom" characters, no leading, trailing or doubled dot.
_LOCAL_PART = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# A domain label: letters, digits, inner hyphens, 1 to 63 characters.
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# A top-level domain starts with a letter (no numeric TLDs; punycode "xn--..." is fine).
_TLD = re.compile(r"[a-z][a-z0-9-]*[a-z0-9]")


def normalize_email(value: str) -> str:
    """An address such as ana@example.com, at most 254 characters, stored lower case."""
    email = value.strip().lower()

    def invalid(why: str) -> ValidationFailed:
        return ValidationFailed("email", f"email must be a valid address such as ana@example.com: {why}")

    if not email:
        raise ValidationFailed("email", "email is required")
    if len(email) > MAX_EMAIL:
        raise ValidationFailed("email", f"email must be at most {MAX_EMAIL} characters, got {len(email)}")
    if email.count("@") != 1:
        raise invalid(f"it needs exactly one '@', got {_shown(value)}")
    local, domain = email.split("@")
    if not local:
        raise invalid("the part before '@' is empty")
    if len(local) > MAX_EMAIL_LOCAL_PART:
        raise invalid(f"the part before '@' is longer than {MAX_EMAIL_LOCAL_PART} characters")
    if not _LOCAL_PART.fullmatch(local):
        raise invalid(f"the part before '@' has a space, a misplaced dot or a character not allowed: {_shown(local)}")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels) or not _TLD.fullmatch(labels[-1]):
        raise invalid(f"the domain after '@' must be a name such as example.com, got {_shown(domain)}")
    return email


#: One normalizer per updatable field: it returns the value to store or raises ValidationFailed.
RULES: Mapping[str, Callable[[str], str]] = {
    "tipo_documento": normalize_tipo_documento,
    "nro_documento": normalize_nro_documento,
    "nombre": normalize_nombre,
    "apellido": normalize_apellido,
    "email": normalize_email,
}


def validate_profile(values: Mapping[str, str], fields: Iterable[str] = UPDATABLE_FIELDS) -> dict[str, str]:
    """The named fields of `values`, normalized; raises ValidationFailed naming the first broken one."""
    return {name: RULES[name](values.get(name, "")) for name in fields}


def update_fields(paths: Sequence[str]) -> tuple[str, ...]:
    """The fields an update mask names (no repeats); an empty mask means every updatable field."""
    if len(paths) > MAX_MASK_PATHS:
        raise InvalidUpdateMask("", f"update_mask must name at most {MAX_MASK_PATHS} paths, got {len(paths)}")
    fields: list[str] = []
    for path in paths:
        if len(path) > MAX_MASK_PATH:
            raise InvalidUpdateMask(
                path[:MAX_MASK_PATH], f"update_mask paths must be at most {MAX_MASK_PATH} characters, got {len(path)}"
            )
        if path in READ_ONLY_FIELDS:
            raise InvalidUpdateMask(
                path,
                f"update_mask names {path!r}, which is read-only; updatable fields: {', '.join(UPDATABLE_FIELDS)}",
            )
        if path not in UPDATABLE_FIELDS:
            raise InvalidUpdateMask(
                path,
                f"update_mask names {_shown(path)}, which is not a field of Usuario; "
                f"updatable fields: {', '.join(UPDATABLE_FIELDS)}",
            )
        if path not in fields:
            fields.append(path)
    return tuple(fields) or UPDATABLE_FIELDS


def require_id(value: str, field: str) -> str:
    """An id the client must send; any non-empty string up to MAX_ID is looked up as is (unknown ones are NOT_FOUND)."""
    if not value:
        raise ValidationFailed(field, f"{field} is required")
    check_length(field, value, MAX_ID)
    return value


def validate_reserva_id(value: str) -> str:
    reserva_id = value.strip()
    if not reserva_id:
        raise ValidationFailed("reserva_id", "reserva_id is required")
    check_length("reserva_id", reserva_id, MAX_RESERVA_ID)
    return reserva_id
