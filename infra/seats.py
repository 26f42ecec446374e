"""The seat rules of one purchase, in one home for the two services that apply them.

reservas checks them before anything is recorded (a malformed request creates no reservation), eventos again where
the seats are taken (it trusts no caller). Both raise the same errors, naming the field `asientos`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from infra.errors import InvalidArgument
from infra.limits import check_length

#: A seat label's most characters, in a seat map and in a purchase.
MAX_SEAT_LABEL = 20


class SeatsRequired(InvalidArgument):
    reason = "SEATS_REQUIRED"


class SeatsNotAllowed(InvalidArgument):
    reason = "SEATS_NOT_ALLOWED"


def _invalid(rule: str) -> InvalidArgument:
    return InvalidArgument(f"asientos {rule}", metadata={"field": "asientos"})


def seat_labels(asientos: Sequence[str]) -> tuple[str, ...]:
    """Seat labels as they are kept: without surrounding spaces (" A-1" is seat "A-1")."""
    return tuple(label.strip() for label in asientos)


def check_seats(asientos: Sequence[str], cantidad: int) -> tuple[str, ...]:
    """The seats a purchase names: none, or exactly `cantidad` distinct labels of 1 to MAX_SEAT_LABEL characters
    (surrounding spaces do not count). Returns them without those spaces."""
    for label in asientos:
        check_length("asientos", label, MAX_SEAT_LABEL)
    labels = seat_labels(asientos)
    if not labels:
        return labels
    if len(labels) != cantidad:
        raise _invalid(f"must name exactly cantidad ({cantidad}) seats, got {len(labels)}")
    if not all(labels):
        raise _invalid("must not name an empty seat label")
    repeated = sorted(label for label, n in Counter(labels).items() if n > 1)
    if repeated:
        raise _invalid(f"must be distinct; repeated: {', '.join(repeated)}")
    return labels


def check_seats_fit(evento_id: str, con_asientos: bool, asientos: Sequence[str], cantidad: int) -> None:
    """Seats are named for an event with a seat map, and only for one."""
    if con_asientos and not asientos:
        raise SeatsRequired(
            f"evento {evento_id!r} has numbered seats: name {cantidad} of them in asientos",
            metadata={"field": "asientos", "evento_id": evento_id},
        )
    if not con_asientos and asientos:
        raise SeatsNotAllowed(
            f"evento {evento_id!r} has no numbered seats: leave asientos empty",
            metadata={"field": "asientos", "evento_id": evento_id},
        )
