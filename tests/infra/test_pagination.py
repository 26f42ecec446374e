"""Page sizes and page tokens: the rules every List RPC shares."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.errors import InvalidArgument
from infra.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_token, encode_token, page_size


def test_page_size_zero_means_default_and_large_is_capped() -> None:
    assert page_size(0) == DEFAULT_PAGE_SIZE
    assert page_size(7) == 7
    assert page_size(MAX_PAGE_SIZE + 1) == MAX_PAGE_SIZE


def test_negative_page_size_is_invalid_and_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_size(-1)
    assert caught.value.metadata == {"field": "page_size"}


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what a position can hold (a MongoDB value)


@given(st.dictionaries(st.text(max_size=10), st.one_of(INT64, st.text(max_size=20)), max_size=4))
def test_token_round_trips(position: dict) -> None:
    assert decode_token(encode_token(position, "scope"), "scope") == position


def test_empty_token_is_the_first_page() -> None:
    assert decode_token("", "scope") is None


@pytest.mark.parametrize("forged", ["garbage", "abc.def", "e30.0000000000000000", "....", "%%%", "eyJ4IjoxfQ"])
def test_forged_tokens_are_refused(forged: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_token(forged, "scope")
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_token_is_bound_to_its_query() -> None:
    token = encode_token({"after": "x"}, "lugar=Antel Arena")
    with pytest.raises(InvalidArgument):
        decode_token(token, "lugar=Teatro Solis")


def test_edited_token_is_refused() -> None:
    token = encode_token({"after": 10}, "scope")
    body, mac = token.rsplit(".", 1)
    edited = encode_token({"after": 99}, "other").rsplit(".", 1)[0] + "." + mac
    with pytest.raises(InvalidArgument):
        decode_token(edited, "scope")


def test_a_token_holding_a_number_beyond_int64_is_invalid_not_internal() -> None:
    """Issue 8's attack: a token signed with the known key, holding a huge number, reached MongoDB and became INTERNAL."""
    token = encode_token({"orden": 10**40, "id": "x"}, "scope")
    with pytest.raises(InvalidArgument) as refused:
        decode_token(token, "scope")
    assert refused.value.reason == "INVALID_PAGE_TOKEN"
    assert decode_token(encode_token({"orden": 2**63 - 1, "id": "x"}, "scope"), "scope")


def test_a_token_with_non_ascii_characters_is_invalid_not_internal() -> None:
    """Found by tests/fuzz: hmac.compare_digest raises TypeError on a non-ASCII MAC, which became INTERNAL."""
    body = encode_token({"after": 10}, "scope").rsplit(".", 1)[0]
    for token in (f"{body}.é", "é.é", f"{body}.3bdb593a6\U0001f6007f7d3f"):
        with pytest.raises(InvalidArgument):
            decode_token(token, "scope")
