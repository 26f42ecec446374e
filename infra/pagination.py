"""Page sizes and opaque page tokens.

A page token is base64url(JSON) plus an HMAC-SHA256 (128 bits of it), bound to the query it was
issued for: a token edited by hand, forged, or replayed with other filters, is refused as
INVALID_ARGUMENT instead of silently returning a wrong page. The HMAC key is the deployment's
(`infra.keys.page_token_key`, read once by each service's Config): there is no key in the code, so
nobody can mint a token that another deployment accepts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from infra.errors import InvalidArgument
from infra.keys import PAGE_TOKEN_KEY, KeyConfigError

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: The longest page_token any List RPC accepts; the tokens this server issues are a small fraction of it.
MAX_PAGE_TOKEN = 1024
#: Hex digits of the HMAC kept in a token (128 bits).
_MAC_CHARS = 32
_MIN_KEY_BYTES = 16


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default; above the maximum is capped; negative is the caller's mistake."""
    if requested < 0:
        raise InvalidArgument(f"page_size must be 0 or more, got {requested}", metadata={"field": "page_size"})
    if requested == 0:
        return default
    return min(requested, maximum)


def invalid_token(why: str = "is not one this server issued for this query") -> InvalidArgument:
    return InvalidArgument(
        f"page_token {why}; start again with an empty page_token",
        reason="INVALID_PAGE_TOKEN",
        metadata={"field": "page_token"},
    )


@dataclass(frozen=True)
class PageTokens:
    """The page tokens of one deployment: signed with its key, so only its own servers' tokens are accepted."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) < _MIN_KEY_BYTES:
            raise KeyConfigError(
                f"{PAGE_TOKEN_KEY} (or {PAGE_TOKEN_KEY}_FILE) must give a key of at least {_MIN_KEY_BYTES} bytes, "
                f"got {len(self.key)}: EventFlow has no default key"
            )

    def _mac(self, payload: bytes, scope: str) -> str:
        return hmac.new(self.key, scope.encode() + b"\0" + payload, hashlib.sha256).hexdigest()[:_MAC_CHARS]

    def encode(self, position: dict[str, Any], scope: str) -> str:
        """A token for the page after `position`, valid only for queries with the same `scope`."""
        payload = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._mac(payload, scope)}"

    def decode(self, token: str, scope: str) -> dict[str, Any] | None:
        """The position a token stands for; None for an empty token (the first page).

        Anything but a token this deployment issued for `scope` is INVALID_ARGUMENT (INVALID_PAGE_TOKEN),
        whatever it holds: the signature is checked before the payload is read.
        """
        if not token:
            return None
        if len(token) > MAX_PAGE_TOKEN:
            raise invalid_token(f"must be at most {MAX_PAGE_TOKEN} characters, got {len(token)}")
        if not token.isascii():
            raise invalid_token()
        try:
            body, mac = token.rsplit(".", 1)
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            if not hmac.compare_digest(mac, self._mac(payload, scope)):
                raise ValueError("bad signature")
            position = json.loads(payload)
            if not isinstance(position, dict):
                raise ValueError("not an object")
            if any(isinstance(v, int) and not _INT64_MIN <= v <= _INT64_MAX for v in position.values()):
                raise ValueError("a number no query can hold")  # MongoDB would refuse it: INTERNAL, not the caller's
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
            raise invalid_token() from None
        return position
