"""Page sizes and page tokens: the rules every List RPC shares."""

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.errors import InvalidArgument
from infra.keys import KeyConfigError
from infra.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_PAGE_TOKEN, PageTokens, page_size

TOKENS = PageTokens(b"a deployment's own 32-byte key!!")
#: The constant key earlier versions fell back to: a token signed with it must mean nothing now.
OLD_CONSTANT_KEY = b"eventflow-page-token-v1"


def test_page_size_zero_means_default_and_large_is_capped() -> None:
    assert page_size(0) == DEFAULT_PAGE_SIZE
    assert page_size(7) == 7
    assert page_size(MAX_PAGE_SIZE + 1) == MAX_PAGE_SIZE


def test_negative_page_size_is_invalid_and_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_size(-1)
    assert caught.value.metadata == {"field": "page_size"}


def test_no_key_no_tokens() -> None:
    for key in (b"", b"short"):
        with pytest.raises(KeyConfigError, match="EVENTFLOW_PAGE_TOKEN_KEY"):
            PageTokens(key)
    assert "key" not in repr(TOKENS).replace("PageTokens", "")  # the key never reaches a log line


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what a position can hold (a MongoDB value)
POSITIONS = st.dictionaries(st.text(max_size=10), st.one_of(INT64, st.text(max_size=20)), max_size=4)


@given(POSITIONS)
def test_token_round_trips(position: dict) -> None:
    assert TOKENS.decode(TOKENS.encode(position, "scope"), "scope") == position


def test_empty_token_is_the_first_page() -> None:
    assert TOKENS.decode("", "scope") is None


def _refused(token: str, scope: str = "scope", tokens: PageTokens = TOKENS) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        tokens.decode(token, scope)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert caught.value.metadata == {"field": "page_token"}
    assert len(caught.value.message) < 200  # never an echo of the token
    return caught.value


@pytest.mark.parametrize(
    "forged", ["garbage", "abc.def", "e30.0000000000000000", "....", "%%%", "eyJ4IjoxfQ", "é.é", "\x00.\x00"]
)
def test_forged_tokens_are_refused(forged: str) -> None:
    _refused(forged)


def test_token_is_bound_to_its_query() -> None:
    _refused(TOKENS.encode({"after": "x"}, "lugar=Antel Arena"), "lugar=Teatro Solis")


def test_token_is_bound_to_its_deployment() -> None:
    """A token of another deployment (another key), or one signed with the constant key of earlier
    versions, is refused: nobody outside this deployment can mint a token it accepts (issue 8)."""
    other = PageTokens(b"another deployment's 32-byte key")
    _refused(other.encode({"after": 10}, "scope"))
    payload = json.dumps({"orden": 10**40, "id": "x"}, separators=(",", ":"), sort_keys=True).encode()
    for digits in (16, 32):
        mac = hmac.new(OLD_CONSTANT_KEY, b"scope\0" + payload, hashlib.sha256).hexdigest()[:digits]
        _refused(base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + mac)


def test_edited_token_is_refused() -> None:
    token = TOKENS.encode({"after": 10}, "scope")
    body, mac = token.rsplit(".", 1)
    edited = TOKENS.encode({"after": 99}, "other").rsplit(".", 1)[0] + "." + mac
    _refused(edited)


def test_a_token_holding_a_number_beyond_int64_is_invalid_not_internal() -> None:
    """Issue 8's attack, had the key leaked: a signed token holding a huge number must not reach MongoDB."""
    _refused(TOKENS.encode({"orden": 10**40, "id": "x"}, "scope"))
    assert TOKENS.decode(TOKENS.encode({"orden": 2**63 - 1, "id": "x"}, "scope"), "scope")


def test_an_overlong_token_is_refused_without_being_read() -> None:
    error = _refused("A" * 1_000_000 + ".0")
    assert str(MAX_PAGE_TOKEN) in error.message


# -- fuzzing the decoder: whatever a caller sends, the answer is a position or INVALID_ARGUMENT --------------


def _position_or_invalid(token: str, scope: str = "scope") -> dict | None:
    try:
        return TOKENS.decode(token, scope)
    except InvalidArgument as error:  # anything else (TypeError, OverflowError, ...) fails the test
        assert error.reason == "INVALID_PAGE_TOKEN"
        return None


@settings(max_examples=500)
@given(st.text(max_size=300))
def test_any_string_is_invalid(token: str) -> None:
    assert token == "" or _position_or_invalid(token) is None  # only the empty token (the first page) is no error


@settings(max_examples=200)
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=", max_size=200))
def test_any_base64ish_string_is_invalid(token: str) -> None:
    assert token == "" or _position_or_invalid(token) is None


@settings(max_examples=500)
@given(POSITIONS, st.data())
def test_bit_flips_of_a_valid_token_are_invalid(position: dict, data: st.DataObject) -> None:
    token = TOKENS.encode(position, "scope").encode()
    flips = data.draw(st.lists(st.integers(0, len(token) * 8 - 1), min_size=1, max_size=4, unique=True))
    edited = bytearray(token)
    for bit in flips:
        edited[bit // 8] ^= 1 << (bit % 8)
    text = edited.decode("latin-1")
    decoded = _position_or_invalid(text)
    # A flip of a base64 padding bit may decode to the same payload: then it is the same position, no other.
    assert decoded is None or decoded == position


@settings(max_examples=200)
@given(POSITIONS, st.text(max_size=5), st.text(max_size=5))
def test_a_valid_token_with_bytes_added_or_cut_is_invalid(position: dict, prefix: str, suffix: str) -> None:
    token = TOKENS.encode(position, "scope")
    for edited in (prefix + token + suffix, token[: len(token) // 2], token[1:], token[:-1]):
        decoded = _position_or_invalid(edited)
        assert decoded is None or decoded == position
