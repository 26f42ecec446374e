"""What a fuzzed call must get, judged from who called and the access table alone (infra/access.py's RULES).

- No call is ever INTERNAL or UNKNOWN, whoever calls with whatever.
- A call without a valid token (none, malformed, expired, forged) is UNAUTHENTICATED.
- A valid token the table does not allow (its role, or a cliente naming what is not its own) is
  PERMISSION_DENIED; or UNAUTHENTICATED when no RPC of that service admits the role at all, since such a
  service need not trust the key that signs it (reservas does not trust servicio tokens).
- A call the table allows is never refused as unauthenticated or forbidden.
- The status a client gets is the one the server sent: no answer too big for gRPC's trailers.
- DEADLINE_EXCEEDED only as the server's own answer (with an ErrorInfo, e.g. a saga still in progress after
  the server's wait); the client's deadline running out means a call hung.

A request bigger than `LARGE` may be refused for its size (RESOURCE_EXHAUSTED) before anyone reads its token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from infra.access import RULES, Rule
from infra.auth import Role
from tests.fuzz.generate import UNAUTHENTICATED_KINDS, Call, Pool

Code = grpc.StatusCode
#: The smallest maximum message size a service may be configured with (issue 8: 1 MiB by default).
LARGE = 1024 * 1024
NEVER = frozenset({Code.INTERNAL, Code.UNKNOWN})
#: The reason given to an answer whose rich status names another code than the call ended with: the server's
#: answer did not reach the client whole (too big for the trailers, so gRPC replaced it).
DETAILS_MISMATCH = "DETAILS_MISMATCH"


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    reason: str = ""  # the ErrorInfo's, when the status has one
    details: str = ""


def _roles_served(rules: Mapping[str, Rule]) -> dict[str, frozenset[Role]]:
    """service full name -> the roles some RPC of it admits."""
    served: dict[str, set[Role]] = {}
    for path, rule in rules.items():
        served.setdefault(path.strip("/").split("/")[0], set()).update(rule.roles)
    return {service: frozenset(roles) for service, roles in served.items()}


ROLES_SERVED = _roles_served(RULES)


def _value(message: object, path: str) -> str:
    for part in path.split("."):
        message = getattr(message, part)
    return str(message)


def refusal(call: Call, pool: Pool) -> frozenset[grpc.StatusCode]:
    """The codes this call must be refused with before any handler runs; empty when its caller may make it."""
    caller = call.caller
    if caller.kind in UNAUTHENTICATED_KINDS:
        return frozenset({Code.UNAUTHENTICATED})
    rule = RULES.get(call.rpc.path)
    assert caller.role is not None
    if rule is None or caller.role not in rule.roles:
        service = call.rpc.method.containing_service.full_name
        if caller.role not in ROLES_SERVED.get(service, frozenset()):
            return frozenset({Code.PERMISSION_DENIED, Code.UNAUTHENTICATED})
        return frozenset({Code.PERMISSION_DENIED})
    if caller.role is not Role.CLIENTE:
        return frozenset()
    if rule.own:
        value = _value(call.request, rule.own)
        if value != caller.usuario_id and not (value == "" and rule.fill_own):
            return frozenset({Code.PERMISSION_DENIED})
    if rule.owned and pool.reservas.get(_value(call.request, rule.owned)) != caller.usuario_id:
        return frozenset({Code.PERMISSION_DENIED})
    return frozenset()


def problem(call: Call, outcome: Outcome, pool: Pool) -> str | None:
    """What is wrong with this outcome, or None."""
    code = outcome.code
    if code in NEVER:
        return code.name
    if outcome.reason == DETAILS_MISMATCH:
        return f"the answer did not reach the client whole: {outcome.details[:120]}"
    if code is Code.DEADLINE_EXCEEDED and not outcome.reason:
        return "client deadline expired (the call hung)"
    expected = refusal(call, pool)
    if expected:
        if code in expected or code is Code.RESOURCE_EXHAUSTED and call.request.ByteSize() > LARGE:
            return None
        return f"{call.caller.kind} caller got {code.name}, not {'/'.join(sorted(c.name for c in expected))}"
    if code in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED):
        return f"an allowed call was refused: {code.name}"
    return None
