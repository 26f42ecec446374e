"""Unit tests of usuarios' domain rules (no I/O): normalization, validation, update masks, page cursors."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.pagination import PageTokens
from usuarios import domain
from usuarios.domain import (
    READ_ONLY_FIELDS,
    UPDATABLE_FIELDS,
    InvalidUpdateMask,
    ValidationFailed,
    normalize_apellido,
    normalize_email,
    normalize_nombre,
    normalize_nro_documento,
    normalize_tipo_documento,
    update_fields,
    validate_profile,
)
from usuarios.repository import _Clock
from usuarios.service import decode_cursor, encode_cursor


def broken_field(call, *args) -> str:
    with pytest.raises(ValidationFailed) as caught:
        call(*args)
    assert caught.value.reason == "VALIDATION_FAILED"
    assert caught.value.metadata["field"] == caught.value.field
    assert caught.value.field in caught.value.message
    return caught.value.field


# --- tipo_documento ------------------------------------------------------------------------------


@given(st.sampled_from(["DNI", "CI", "PASAPORTE"]), st.data())
def test_tipo_documento_any_case_in_upper_case_stored(tipo: str, data: st.DataObject) -> None:
    mixed = "".join(c.lower() if data.draw(st.booleans()) else c for c in tipo)
    assert normalize_tipo_documento(f" {mixed} ") == tipo


@given(st.text(max_size=12).filter(lambda s: s.strip().upper() not in {"DNI", "CI", "PASAPORTE"}))
def test_tipo_documento_other_values_rejected(value: str) -> None:
    assert broken_field(normalize_tipo_documento, value) == "tipo_documento"


# --- nro_documento -------------------------------------------------------------------------------


@given(st.text(string.ascii_letters + string.digits, min_size=1, max_size=20))
def test_nro_documento_alphanumeric_up_to_20_accepted_upper_cased(nro: str) -> None:
    assert normalize_nro_documento(nro) == nro.upper()


@pytest.mark.parametrize(
    "value",
    ["", "   ", "1" * 21, "12.345.678", "1234-5", "12 34", "ñ123", "١٢٣", "12\n3", "AB_1"],
)
def test_nro_documento_rejected(value: str) -> None:
    assert broken_field(normalize_nro_documento, value) == "nro_documento"


@given(st.text(min_size=1, max_size=20).filter(lambda s: any(c not in string.ascii_letters + string.digits for c in s.strip())))
def test_nro_documento_any_non_alphanumeric_rejected(value: str) -> None:
    assert broken_field(normalize_nro_documento, value) == "nro_documento"


# --- nombre, apellido ----------------------------------------------------------------------------


@pytest.mark.parametrize("normalize,field", [(normalize_nombre, "nombre"), (normalize_apellido, "apellido")])
def test_names_rules(normalize, field: str) -> None:
    assert normalize("  María José ") == "María José"
    assert normalize("x" * 100) == "x" * 100
    assert normalize(" " + "ñ" * 100 + " ") == "ñ" * 100  # characters, not bytes; surrounding spaces do not count
    for bad in ["", "   ", "\t\n", "x" * 101, "Ana\x00", "Ana\u200bPérez"]:
        assert broken_field(normalize, bad) == field


@given(st.text(min_size=1, max_size=100).filter(lambda s: s.strip() and s == s.strip() and s.isprintable()))
def test_names_printable_up_to_100_accepted_unchanged(value: str) -> None:
    assert normalize_nombre(value) == value


# --- email ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,stored",
    [
        ("ana@example.com", "ana@example.com"),
        ("  Ana.Perez@Example.COM ", "ana.perez@example.com"),
        ("a+tag@sub.example.com.uy", "a+tag@sub.example.com.uy"),
        ("o'brien@mail-server.example.org", "o'brien@mail-server.example.org"),
        ("x@xn--80ak6aa92e.com", "x@xn--80ak6aa92e.com"),
        ("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".uy", None),  # 254 characters
    ],
)
def test_valid_emails_stored_lower_case(value: str, stored: str | None) -> None:
    assert normalize_email(value) == (stored or value.strip().lower())


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "ana",
        "ana@",
        "@example.com",
        "ana@@example.com",
        "ana@b@example.com",
        "ana perez@example.com",
        "ana@exa mple.com",
        "ana@localhost",
        "ana@example.",
        "ana@.example.com",
        "ana@example..com",
        "ana@-example.com",
        "ana@example-.com",
        "ana@example.123",
        "ana@example.c",
        "ana@127.0.0.1",
        ".ana@example.com",
        "ana.@example.com",
        "an..a@example.com",
        "ana(x)@example.com",
        "añа@example.com",
        "a" * 65 + "@example.com",
        "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 59 + ".uy",  # 255 characters
    ],
)
def test_invalid_emails_rejected(value: str) -> None:
    assert broken_field(normalize_email, value) == "email"


@given(st.emails())
def test_generated_addresses_accepted_or_rejected_only_for_length(email: str) -> None:
    local = email.rsplit("@", 1)[0]
    if len(email) <= 254 and len(local) <= 64:
        assert normalize_email(email) == email.lower()
    else:
        assert broken_field(normalize_email, email) == "email"


@given(st.emails(), st.data())
def test_email_with_inner_whitespace_rejected(email: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(1, len(email) - 1))
    value = email[:at] + data.draw(st.sampled_from([" ", "\t", "\n", "\u00a0"])) + email[at:]
    assert broken_field(normalize_email, value) == "email"


# --- whole profiles and update masks -------------------------------------------------------------

VALID = {"tipo_documento": "ci", "nro_documento": "a1", "nombre": " Ana ", "apellido": "Pérez", "email": "A@B.UY"}


def test_validate_profile_normalizes_every_field() -> None:
    assert validate_profile(VALID) == {
        "tipo_documento": "CI",
        "nro_documento": "A1",
        "nombre": "Ana",
        "apellido": "Pérez",
        "email": "a@b.uy",
    }


def test_validate_profile_names_the_first_broken_field_in_field_order() -> None:
    values = dict(VALID, nombre="", email="nope")
    assert broken_field(validate_profile, values) == "nombre"
    assert broken_field(validate_profile, {}) == "tipo_documento"


def test_validate_profile_only_checks_the_named_fields() -> None:
    assert validate_profile({"email": "X@Y.UY", "nombre": ""}, ["email"]) == {"email": "x@y.uy"}


def test_update_mask_empty_means_every_updatable_field() -> None:
    assert update_fields([]) == UPDATABLE_FIELDS


def test_update_mask_keeps_order_and_drops_repeats() -> None:
    assert update_fields(["email", "nombre", "email"]) == ("email", "nombre")


@pytest.mark.parametrize("path", [*READ_ONLY_FIELDS, "telefono", "usuario.email", "EMAIL", ""])
def test_update_mask_unknown_or_read_only_path_rejected(path: str) -> None:
    with pytest.raises(InvalidUpdateMask) as caught:
        update_fields(["nombre", path])
    assert caught.value.reason == "INVALID_UPDATE_MASK"
    assert caught.value.metadata == {"field": "update_mask", "path": path}
    assert repr(path) in caught.value.message


def test_ids_required() -> None:
    assert broken_field(domain.require_id, "", "usuario_id") == "usuario_id"
    assert domain.require_id("anything at all", "id") == "anything at all"
    assert broken_field(domain.validate_reserva_id, "  ") == "reserva_id"
    assert broken_field(domain.validate_reserva_id, "r" * 129) == "reserva_id"
    assert domain.validate_reserva_id(" r-1 ") == "r-1"


def test_new_ids_are_unique_strings() -> None:
    ids = {domain.new_usuario_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(isinstance(i, str) and i for i in ids)


def test_error_messages_quote_huge_values_cut_short() -> None:
    with pytest.raises(ValidationFailed) as caught:
        normalize_tipo_documento("X" * 10_000)
    assert len(caught.value.message) < 200


# --- page cursors and creation order -------------------------------------------------------------


TOKENS = PageTokens(b"usuarios-domain-test-key-32bytes")


def test_cursor_round_trip() -> None:
    assert decode_cursor(TOKENS, "") is None
    assert decode_cursor(TOKENS, encode_cursor(TOKENS, (1_700_000_000_000_000, "abc"))) == (1_700_000_000_000_000, "abc")
    assert encode_cursor(TOKENS, None) == ""


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "e30.0000000000000000",
        TOKENS.encode({"orden": 1, "id": "a"}, "eventflow.eventos.v1.ListEventos"),  # another query's
        TOKENS.encode({"orden": "1", "id": "a"}, "eventflow.usuarios.v1.ListUsuarios"),  # wrong shape
        TOKENS.encode({"id": "a"}, "eventflow.usuarios.v1.ListUsuarios"),
        # another deployment's (another key)
        PageTokens(b"another-deployment-key-32-bytes!").encode({"orden": 1, "id": "a"}, "eventflow.usuarios.v1.ListUsuarios"),
    ],
)
def test_forged_or_foreign_tokens_rejected(token: str) -> None:
    with pytest.raises(domain.InvalidArgument) as caught:
        decode_cursor(TOKENS, token)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert caught.value.metadata == {"field": "page_token"}


def test_tampered_token_rejected() -> None:
    token = encode_cursor(TOKENS, (5, "abc"))
    body, mac = token.rsplit(".", 1)
    tampered = encode_cursor(TOKENS, (6, "abc")).rsplit(".", 1)[0] + "." + mac
    assert tampered != token
    with pytest.raises(domain.InvalidArgument):
        decode_cursor(TOKENS, tampered)


def test_creation_clock_strictly_increases() -> None:
    clock = _Clock()
    values = [clock.next()[1] for _ in range(10_000)]
    assert values == sorted(set(values))
