"""What logs and printed messages may show: secrets and personal data taken out.

Logs never hold bearer tokens, passwords (also inside a store's URI), e-mail addresses, document numbers or
payment tokens and card numbers (issue 8). Call sites log ids, counts and names of fields, not values; this
module is the safety net behind them, applied to every log line by infra.logs.JsonFormatter:

- a field whose name says it holds such a value (`SENSITIVE_NAMES`: `email`, `nro_documento`, `medio_pago`,
  `authorization`, anything with `token`, `password` or `secret` in its name...) is replaced whole;
- every other text (the message, the traceback, other fields' values) loses what looks like one: the password
  of a URI (`scheme://user:***@host`), `Bearer ...`, JWTs (`eyJ...`), e-mail addresses, numbers of 13 to 19
  digits (cards), payment tokens (`tok_...`), and the value of `name: value` / `name=value` pairs whose name
  is sensitive (as a MongoDB duplicate-key error prints the document's key: `{ email: "..." }`).

`redact_uri` takes only the password out of a URI, for messages that show a store's address to a person.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"

#: A field whose name contains one of these (case-insensitive) is never shown.
SENSITIVE_NAMES = (
    "authorization",
    "token",
    "password",
    "passwd",
    "secret",
    "credential",
    "cookie",
    "private_key",
    "api_key",
    "email",
    "documento",
    "medio_pago",
    "tarjeta",
    "card",
)

_NAMES = "|".join(re.escape(name) for name in SENSITIVE_NAMES)

#: scheme://user:password@ (the user stays: it says which account connected).
_URI_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s]*):[^@/?#\s]*@")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
#: A JWT, or any base64url JSON object (what a JWT's parts are): `{"` encodes as `eyJ`.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,2}")
_PAIR = re.compile(
    rf"""(?ix)
    (?P<name>\b[\w.-]*(?:{_NAMES})[\w.-]*)      # a sensitive name, as a word: email, nro_documento, x-api-token
    (?P<sep>["']?\s*[:=]\s*)                     # : or =, maybe after a closing quote (JSON)
    (?P<value>"[^"]*"|'[^']*'|[^\s,;}})\]]+)      # a quoted value, or one up to a separator
    """
)
#: An address as usuarios accepts one: RFC 5322 atoms before the @, a domain name with a top-level label after it.
_EMAIL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z][A-Za-z0-9-]*")
#: 13 to 19 digits, maybe grouped by single spaces or dashes, not part of a longer word or id.
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_PAYMENT_TOKEN = re.compile(r"\btok_[A-Za-z0-9_]+")


def sensitive(name: str) -> bool:
    """True when a field called `name` holds a value that logs must not show."""
    lowered = name.lower()
    return any(fragment in lowered for fragment in SENSITIVE_NAMES)


def redact_uri(uri: str) -> str:
    """`uri` with the password of its user info replaced (`mongodb://reservas:[redacted]@mongo:27017/...`)."""
    return _URI_PASSWORD.sub(rf"\1:{REDACTED}@", uri)


def redact_text(text: str) -> str:
    """`text` without what looks like a secret or personal data (see the module docstring)."""
    text = redact_uri(text)
    text = _BEARER.sub(f"Bearer {REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    text = _PAIR.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}", text)
    text = _EMAIL.sub(REDACTED, text)
    text = _CARD.sub(REDACTED, text)
    return _PAYMENT_TOKEN.sub(REDACTED, text)


def redact_value(value: Any) -> Any:
    """A log field's value made safe: texts redacted, containers walked, numbers and booleans kept."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return redact_fields(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item) for item in value]
    return redact_text(str(value))  # what json.dumps(default=str) would have written


def redact_field(name: str, value: Any) -> Any:
    """The value a log line may show for the field `name`."""
    if sensitive(name) and value not in (None, ""):
        return REDACTED
    return redact_value(value)


def redact_fields(fields: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(name): redact_field(str(name), value) for name, value in fields.items()}
