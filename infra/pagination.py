"""Page sizes and opaque page tokens.

A page token is base64url(JSON) plus a short HMAC, bound to the query it was
issued for: a token edited by hand, or replayed with other filters, is refused
as INVALID_ARGUMENT instead of silently returning a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from typing import Any

from infra.errors import InvalidArgument

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_KEY = os.environ.get("EVENTFLOW_PAGE_TOKEN_KEY", "eventflow-page-token-v1").encode()


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default; above the maximum is capped; negative is the caller's mistake."""
    if requested < 0:
        raise InvalidArgument(f"page_size must be 0 or more, got {requested}", metadata={"field": "page_size"})
    if requested == 0:
        return default
    return min(requested, maximum)


def _mac(payload: bytes, scope: str) -> str:
    return hmac.new(_KEY, scope.encode() + b"\0" + payload, hashlib.sha256).hexdigest()[:16]


def encode_token(position: dict[str, Any], scope: str) -> str:
    """A token for the page after `position`, valid only for queries with the same `scope`."""
    payload = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_mac(payload, scope)}"


def decode_token(token: str, scope: str) -> dict[str, Any] | None:
    """The position a token stands for; None for an empty token (the first page)."""
    if not token:
        return None
    try:
        body, mac = token.rsplit(".", 1)
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if not hmac.compare_digest(mac, _mac(payload, scope)):
            raise ValueError("bad signature")
        position = json.loads(payload)
        if not isinstance(position, dict):
            raise ValueError("not an object")
        if any(isinstance(v, int) and not _INT64_MIN <= v <= _INT64_MAX for v in position.values()):
            raise ValueError("a number no query can hold")  # MongoDB would refuse it: INTERNAL, not the caller's answer
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):  # TypeError: compare_digest of non-ASCII
        raise InvalidArgument(
            "page_token is not one this server issued for this query; start again with an empty page_token",
            reason="INVALID_PAGE_TOKEN",
            metadata={"field": "page_token"},
        ) from None
    return position
