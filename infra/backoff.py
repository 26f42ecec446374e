"""The delay before a retry: exponential backoff with "equal jitter" (half of it fixed, half random).

One formula for every retry loop of the project (reservas' calls to usuarios and eventos, the saga's undos), so
that they back off alike and a change of the rule is made once.
"""

from __future__ import annotations

import random


def jittered(attempt: int, first: float, ceiling: float) -> float:
    """Before retry number `attempt` (1, 2, ...): `first` doubled each time up to `ceiling`, of which a random half."""
    limit = min(ceiling, first * 2 ** (attempt - 1))
    return limit / 2 + random.uniform(0, limit / 2)  # noqa: S311 - jitter, not cryptography
