"""The shared size limits: GRPC_MAX_MESSAGE_BYTES, and how many items fit in a reply's byte budget."""

import pytest

from infra.limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_MESSAGE_VAR,
    field_size,
    fitting,
    max_message_bytes,
    message_options,
    reply_budget,
)


def test_max_message_bytes_is_1_mib_unless_configured() -> None:
    assert max_message_bytes({}) == DEFAULT_MAX_MESSAGE_BYTES == 1_048_576
    assert max_message_bytes({MAX_MESSAGE_VAR: "4194304"}) == 4 << 20
    assert message_options(1 << 20) == [
        ("grpc.max_receive_message_length", 1 << 20),
        ("grpc.max_send_message_length", 1 << 20),
    ]
    assert 0 < reply_budget(1 << 20) < 1 << 20


@pytest.mark.parametrize("raw", ["1MB", "-1", "100", str(2**31), "x" * 10_000])
def test_a_bad_max_message_bytes_names_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match=MAX_MESSAGE_VAR) as caught:
        max_message_bytes({MAX_MESSAGE_VAR: raw})
    assert len(str(caught.value)) < 200


def test_field_size_counts_tag_length_and_bytes() -> None:
    assert field_size(0) == 2
    assert field_size(127) == 129
    assert field_size(128) == 131


def test_fitting_stops_before_the_budget_but_always_moves_on() -> None:
    assert fitting([], len, 100) == 0
    assert fitting(["x" * 10] * 5, len, 36) == 3  # 12 bytes each
    assert fitting(["x" * 10] * 5, len, 1000) == 5
    assert fitting(["x" * 500, "y"], len, 100) == 1  # one item too big alone still makes a page
