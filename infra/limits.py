"""The size limits the three services share: the largest gRPC message, and the byte budget of a reply.

A request larger than the limit is refused by gRPC itself (RESOURCE_EXHAUSTED) before any code of ours
reads it. No reply a server builds may be larger either: lists stop adding items at `reply_budget`
bytes (and give a next_page_token from there), and a seat map too big for one message is read in pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from infra.errors import InvalidArgument

MAX_MESSAGE_VAR = "GRPC_MAX_MESSAGE_BYTES"
#: 1 MiB: a page of 500 reservations or users is a fraction of it, the biggest seat map (50,000 seats)
#: is written with seat ranges in a few kilobytes and read in pages.
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
#: Below this a single reply of the API (an event with its seats, a full page) could not fit.
MIN_MAX_MESSAGE_BYTES = 64 << 10
#: gRPC's own ceiling (a signed 32-bit length).
MAX_MAX_MESSAGE_BYTES = 2**31 - 1
#: What a reply holds besides its items (a next_page_token, a timestamp): kept free of items.
REPLY_MARGIN = 4 << 10

T = TypeVar("T")


def max_message_bytes(env: Mapping[str, str]) -> int:
    """GRPC_MAX_MESSAGE_BYTES from `env` (each service's Config reads it through here); 1 MiB when unset."""
    raw = env.get(MAX_MESSAGE_VAR, "")
    try:
        value = int(raw) if raw else DEFAULT_MAX_MESSAGE_BYTES
    except ValueError:
        raise ValueError(f"{MAX_MESSAGE_VAR} must be a whole number of bytes, got {raw[:40]!r}") from None
    if not MIN_MAX_MESSAGE_BYTES <= value <= MAX_MAX_MESSAGE_BYTES:
        raise ValueError(
            f"{MAX_MESSAGE_VAR} must be from {MIN_MAX_MESSAGE_BYTES} to {MAX_MAX_MESSAGE_BYTES} bytes, got {value}"
        )
    return value


def message_options(max_bytes: int) -> list[tuple[str, int]]:
    """The options that cap what a server or channel receives and sends at `max_bytes`."""
    return [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]


def reply_budget(max_bytes: int) -> int:
    """How many bytes a reply's items may take, leaving room for the rest of the reply."""
    return max_bytes - REPLY_MARGIN


def _varint_size(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def field_size(encoded: int) -> int:
    """What one element of a repeated message field adds to a reply: its tag, its length, its bytes."""
    return 1 + _varint_size(encoded) + encoded


def fitting(items: Iterable[T], size_of: Callable[[T], int], budget: int) -> int:
    """How many of `items`, from the first, fit in `budget` bytes as the elements of a repeated field.

    At least one when there is any (a page always moves on; the caps of each service keep a single item far
    below any allowed budget).
    """
    used = count = 0
    for item in items:
        used += field_size(size_of(item))
        if used > budget and count > 0:
            break
        count += 1
    return count


class _Message(Protocol):
    def ByteSize(self) -> int: ...  # noqa: N802 - protobuf's name


@dataclass(frozen=True)
class ReplyBudget(Generic[T]):
    """The bytes a list reply's items may take, and how one item is measured as it will be answered.

    Services take one (built by their server from the message limit) and stop a page where the next item
    would pass it, so a page is bounded by bytes as well as by page_size.
    """

    limit: int
    size_of: Callable[[T], int]

    @classmethod
    def of_messages(cls, max_message_bytes: int, to_message: Callable[[T], _Message]) -> ReplyBudget[T]:
        """The budget of replies of at most `max_message_bytes`, items measured as `to_message` encodes them."""
        return cls(reply_budget(max_message_bytes), lambda item: to_message(item).ByteSize())

    def fitting(self, items: Iterable[T]) -> int:
        """How many of `items`, from the first, fit (at least one when there is any)."""
        return fitting(items, self.size_of, self.limit)


# -- caps of request fields: each service's domain names its own (the limits live there), these raise --------


def too_long(field: str, limit: int, got: int, unit: str = "characters") -> InvalidArgument:
    """The error of a value over its cap: it names the field and the cap, and never echoes the value."""
    return InvalidArgument(
        f"{field} must be at most {limit} {unit}, got {got}", metadata={"field": field, "max": limit}
    )


def check_length(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise too_long(field, limit, len(value))


def check_count(field: str, values: Sized, limit: int, unit: str = "items") -> None:
    if len(values) > limit:
        raise too_long(field, limit, len(values), unit)
