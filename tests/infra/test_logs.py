"""JSON logs: one object per line, and never a token, password, e-mail, document number or payment token."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.logs import JsonFormatter, reserva_id_var
from infra.redact import REDACTED, redact_text, redact_uri, sensitive

JWT = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlX2J5dGVz"
SECRETS = [
    "ana.perez@example.com",
    "41234567",  # a document number: recognisable only by its field's name
    "4111111111111111",
    "4111 1111 1111 1111",
    "tok_visa",
    JWT,
    "s3cr3t-Passw0rd",
]


def line(message: str, *args: object, exc: bool = False, **extra: object) -> dict[str, object]:
    """What JsonFormatter writes for one record, parsed back."""
    record = logging.LogRecord("eventflow.test", logging.INFO, __file__, 1, message, args, None)
    if exc:
        try:
            raise ValueError(f"duplicate key: {{ email: \"ana.perez@example.com\" }} from {JWT}")
        except ValueError:
            record.exc_info = sys.exc_info()
    record.__dict__.update(extra)
    text = JsonFormatter("test").format(record)
    assert "\n" not in text
    return json.loads(text)


def assert_clean(entry: dict[str, object]) -> None:
    text = json.dumps(entry, ensure_ascii=False)
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} reached a log line: {text}"


def test_fields_named_as_sensitive_are_replaced_whole() -> None:
    entry = line(
        "usuario created",
        usuario_id="u-1",
        email="ana.perez@example.com",
        nro_documento="41234567",
        medio_pago="tok_visa",
        authorization=f"Bearer {JWT}",
        page_token="abc",
        redis_password="s3cr3t-Passw0rd",
    )
    assert entry["usuario_id"] == "u-1"  # ids stay: they are how a person follows a purchase
    for name in ("email", "nro_documento", "medio_pago", "authorization", "page_token", "redis_password"):
        assert entry[name] == REDACTED
    assert_clean(entry)


def test_values_that_look_sensitive_are_redacted_in_any_field_the_message_and_the_traceback() -> None:
    entry = line(
        "charging %s for %s",
        "4111 1111 1111 1111",
        "ana.perez@example.com",
        exc=True,
        error="E11000 duplicate key error collection: u index: doc dup key: { nro_documento: \"41234567\" }",
        detail={"nested": [f"authorization: Bearer {JWT}", "medio_pago=tok_visa"]},
        uri="mongodb://reservas:s3cr3t-Passw0rd@mongo:27017/?replicaSet=rs0&authSource=admin",
    )
    assert_clean(entry)
    assert entry["uri"] == f"mongodb://reservas:{REDACTED}@mongo:27017/?replicaSet=rs0&authSource=admin"
    assert "ValueError" in str(entry["exc"])  # the traceback stays, without the values


def test_what_logs_need_survives() -> None:
    reserva_id_var.set("r-7")
    try:
        entry = line(
            "entradas taken",
            evento_id="665f1c2ab1e4c3a9d8f0a1b2",
            reserva_id="0f8b6a1e-93c4-4a51-8d7e-2b1f4c9a7e60",
            cantidad=2,
            asientos=["A-1", "A-2"],
            fields=["email", "nombre"],  # names of fields are not their values
            ts_ms=1718000000000,  # a number is never taken for a card
            ocurrido="2026-06-11T20:13:39.123+00:00",
        )
    finally:
        reserva_id_var.set(None)
    assert entry["reserva_id"] == "0f8b6a1e-93c4-4a51-8d7e-2b1f4c9a7e60"
    assert entry["evento_id"] == "665f1c2ab1e4c3a9d8f0a1b2"
    assert entry["asientos"] == ["A-1", "A-2"] and entry["fields"] == ["email", "nombre"]
    assert entry["ts_ms"] == 1718000000000 and entry["ocurrido"] == "2026-06-11T20:13:39.123+00:00"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "mongodb://usuarios:p%40ss@mongo:27017/?authSource=admin",
            f"mongodb://usuarios:{REDACTED}@mongo:27017/?authSource=admin",
        ),
        ("redis://reservas:pw@redis:6379/0", f"redis://reservas:{REDACTED}@redis:6379/0"),
        ("redis://:pw@redis:6379/0", f"redis://:{REDACTED}@redis:6379/0"),
        ("mongodb://127.0.0.1:27017/?directConnection=true", "mongodb://127.0.0.1:27017/?directConnection=true"),
        ("mongodb+srv://app:pw@cluster0.example.net/db", f"mongodb+srv://app:{REDACTED}@cluster0.example.net/db"),
    ],
)
def test_redact_uri_hides_only_the_password(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_sensitive_names() -> None:
    names = ("email", "Authorization", "x-api-token", "nro_documento", "medio_pago", "token_pago", "MONGO_PASSWORD")
    for name in names:
        assert sensitive(name), name
    for name in ("usuario_id", "reserva_id", "evento_id", "fields", "error", "cantidad", "estado", "clave"):
        assert not sensitive(name), name


@given(st.emails())
def test_any_email_is_redacted_in_text(email: str) -> None:
    assert email not in redact_text(f"user {email} created")


# -- call sites: what the code itself logs and prints ------------------------------------------------------


def test_a_failed_commands_message_is_not_logged_only_its_code() -> None:
    from pymongo.errors import AutoReconnect, DuplicateKeyError  # noqa: PLC0415

    from infra.mongo import error_summary  # noqa: PLC0415

    duplicate = DuplicateKeyError(
        "E11000 duplicate key error collection: eventflow_usuarios.usuarios index: email_1 "
        'dup key: { email: "ana@x.uy" }',
        11000,
        {"code": 11000, "codeName": "DuplicateKey"},
    )
    assert error_summary(duplicate) == "DuplicateKeyError (code 11000 DuplicateKey)"
    refused = AutoReconnect("mongo:27017: connection refused")  # a connection error names hosts only: kept
    assert error_summary(refused) == "AutoReconnect: mongo:27017: connection refused"


async def test_ping_says_why_mongodb_does_not_answer_once_per_cause(caplog: pytest.LogCaptureFixture) -> None:
    from pymongo import AsyncMongoClient  # noqa: PLC0415

    from infra import procs  # noqa: PLC0415
    from infra.mongo import ping  # noqa: PLC0415

    uri = f"mongodb://app:s3cr3t-Passw0rd@127.0.0.1:{procs.free_port()}/?serverSelectionTimeoutMS=100"
    client: AsyncMongoClient = AsyncMongoClient(uri)
    try:
        with caplog.at_level(logging.WARNING, logger="infra.mongo"):
            assert not await ping(client["eventflow_test_ping"])
            assert not await ping(client["eventflow_test_ping"])
    finally:
        await client.close()
    lines = [r for r in caplog.records if r.getMessage() == "MongoDB does not answer"]
    assert len(lines) == 1 and "ServerSelectionTimeoutError" in lines[0].error  # type: ignore[attr-defined]
    assert_clean(json.loads(JsonFormatter("test").format(lines[0])))


def test_eventflow_up_prints_store_uris_without_their_passwords(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path  # noqa: PLC0415

    from infra.stack import Options, Stack  # noqa: PLC0415

    env = {
        "MONGODB_URI": "mongodb://eventflow:s3cr3t-Passw0rd@db.internal:27017/?authSource=admin",
        "REDIS_URL": "redis://reservas:s3cr3t-Passw0rd@cache.internal:6379/0",
    }
    stack = Stack(Options(data_dir=Path(str(tmp_path))), env=env)
    stack._print_ready({})
    printed = capsys.readouterr().out
    assert f"mongodb://eventflow:{REDACTED}@db.internal:27017/?authSource=admin" in printed
    assert f"redis://reservas:{REDACTED}@cache.internal:6379/0" in printed
    assert "s3cr3t-Passw0rd" not in printed
