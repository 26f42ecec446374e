"""Poison events: a stream the read models cannot take is tried a few times, set aside, and skipped.

The projector and the rebuild apply many reservations' states in one transaction (`ReadModels.apply`). One
state the store refuses (an `$inc` of `recaudado` past int64), or one stream the aggregate cannot replay (a
field missing or of the wrong type, an unknown event type), or a bug of ours that raises on one of them,
used to fail the whole batch again and again: the checkpoint never moved and `actualizado_hasta` stopped for
every event. `PoisonGuard` applies a batch so that this cannot happen:

1. Streams already in the dead letters are kept out of the batch; the rest go in one transaction, as before.
2. If the store refuses that transaction, the batch is split in halves, recursively: the good streams are
   applied (in a few transactions) and the refused ones are found.
3. Each refused, unreadable or already-aside stream is tried again on its own (read afresh, applied alone),
   `attempts` times in all, with a backoff doubling from `backoff` (3 and 0.1 s: 0.1 s, then 0.2 s). One that
   applies is done, and its dead letter, if it had one, is removed.
4. For one that still fails, the store is pinged first (a failure that is really the store's, such as a driver
   error during an outage, is not blamed on the event); then its events are applied one at a time, to bring
   its view up to the state just before the event that cannot be applied and to name that event. It is
   recorded in the dead letters (`dead_letters.py`: reserva_id, version, tipo, the error, attempts), counted,
   logged at ERROR when it is new (WARNING when it fails again later), and skipped: the caller moves on, and
   the projector's checkpoint advances past it.

Poison or the store's trouble. A store that is down, stepping down, busy or slow (connection errors, timeouts,
write conflicts, errors labelled transient or retryable, a write concern not met) is not the event's fault:
`is_transient` errors are raised at once, and the projector retries the whole batch from its checkpoint, with
its own backoff, for as long as it takes; nothing is set aside. Anything else is the event's: the server
refusing a write (an overflow, a document it cannot store), bad data, or an error of our code. A bug that
fails every stream sets every stream aside (loudly); after the fix, `replay-dead-letters` or a rebuild
applies them.

What a stream with a dead letter looks like. Its view holds the state just before its poison event: a state
the reservation really had, whose `version` says how far it got, and the statistics count that view like any
other (they stay the sum of the views). It is never "the stream without the poison event": the projector
applies states, not events, and every later state contains the poison event's effect (a charge stays in
`pagos`; a stream that fails to replay at event k fails for every longer prefix), so leaving the event out
would make up a state the reservation never had (CONFIRMADA without its charge, `recaudado` silently wrong).
Later events of that stream are still tried (step 3): usually they fail the same way and only update its dead
letter; if a later state does apply (a refund brings a sum back in range, a fixed projector is deployed), the
view is current again and the dead letter is removed. A projector knows the dead letters from a read when it
starts and every `refresh_every` seconds; `eventflow projections replay-dead-letters` and a rebuild try every
dead letter again. A failure that comes from a sum rather than from one stream (two purchases that together
overflow `recaudado`) falls on whichever is applied second: the projector goes by time, a rebuild by reserva_id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from reservas.domain import Reserva
from reservas.projections.dead_letters import DeadLetters, summary
from reservas.projections.read_models import ReadModels
from reservas.projections.source import StreamFailure, StreamSource

log = logging.getLogger(__name__)

#: Error labels of a failure worth retrying as it is.
TRANSIENT_LABELS = ("TransientTransactionError", "UnknownTransactionCommitResult", "RetryableWriteError")

#: Server error codes that are about the server's state, not about what was written: unreachable, shutting
#: down or stepping down, not primary, busy or out of time, a conflict with another writer (and a duplicate
#: key, which in the views can only be one), not authorized (a store refusing us refuses every event).
TRANSIENT_CODES = frozenset(
    {
        6, 7, 13, 18, 24, 46, 50, 64, 89, 91, 112, 117, 133, 134, 189, 251, 262, 9001, 10107, 11000,
        11600, 11601, 11602, 13435, 13436,
    }
)  # fmt: skip


def is_transient(error: BaseException) -> bool:
    """The store's trouble (down, busy, a conflict, a timeout): retry it, never set an event aside for it."""
    if isinstance(error, OSError):  # the network under the driver
        return True
    if not isinstance(error, PyMongoError):
        return False  # our code, or the data
    if error.timeout or any(error.has_error_label(label) for label in TRANSIENT_LABELS):
        return True
    if isinstance(error, BulkWriteError):  # transient when every refused write is (or only the write concern)
        return all(e.get("code") in TRANSIENT_CODES for e in error.details.get("writeErrors") or ())
    if isinstance(error, OperationFailure):
        return error.code in TRANSIENT_CODES
    return True  # no answer at all: no server, a closed connection or client


@dataclass
class Outcome:
    """What one call did with the streams that did not apply at the first try."""

    #: Set aside (or kept aside) this time, each with the event it stopped at.
    dead_lettered: list[StreamFailure] = field(default_factory=list)
    #: Tried on their own and applied (a retry helped, or a dead letter's stream applies now).
    applied: list[str] = field(default_factory=list)
    #: Dead letters removed because their stream applies now.
    resolved: list[str] = field(default_factory=list)


class PoisonGuard:
    def __init__(
        self,
        models: ReadModels,
        source: StreamSource,
        dead_letters: DeadLetters,
        *,
        by: str,
        attempts: int = 3,
        backoff: float = 0.1,
        refresh_every: float = 10.0,
    ) -> None:
        self.models = models
        self.source = source
        self.dead_letters = dead_letters
        self.by = by
        self.attempts = attempts
        self.backoff = backoff
        self.refresh_every = refresh_every
        #: The reservations in the dead letters, as last read (and as this guard changed them since).
        self.known: set[str] = set()
        self._refreshed: float | None = None
        #: Observability: streams set aside (each time), and dead letters removed because they apply now.
        self.dead_lettered = 0
        self.resolved = 0

    async def refresh(self, force: bool = False) -> None:
        if force or self._refreshed is None or time.monotonic() - self._refreshed >= self.refresh_every:
            self.known = await self.dead_letters.ids()
            self._refreshed = time.monotonic()

    async def project(self, reserva_ids: Iterable[str]) -> Outcome:
        """Bring these reservations' views up to their streams' current states; set aside the streams that
        cannot be applied. Raises only what `is_transient` says is the store's trouble."""
        await self.refresh()
        ids = list(dict.fromkeys(reserva_ids))
        fresh = [i for i in ids if i not in self.known]
        loaded = await self.source.load(fresh) if fresh else []
        return await self._project(loaded, {i: None for i in ids if i in self.known})

    async def project_loaded(self, loaded: Sequence[Reserva | StreamFailure]) -> Outcome:
        """`project` for states read already (a rebuild's scan)."""
        await self.refresh()
        return await self._project(loaded, {})

    async def replay(self, reserva_ids: Iterable[str]) -> Outcome:
        """Try these dead letters' streams again, once each (after a fix): remove the dead letters of those
        that apply now, record the new failure of the others."""
        await self.refresh(force=True)
        return await self._settle(dict.fromkeys(reserva_ids), attempts=1)

    async def _project(
        self, loaded: Sequence[Reserva | StreamFailure], suspects: dict[str, StreamFailure | None]
    ) -> Outcome:
        states: list[Reserva] = []
        for item in loaded:
            if isinstance(item, StreamFailure):
                suspects[item.reserva_id] = item
            elif item.id in self.known:
                suspects.setdefault(item.id, None)
            else:
                states.append(item)
        for failure in await self._apply_splitting(states):
            suspects[failure.reserva_id] = failure
        return await self._settle(suspects, self.attempts) if suspects else Outcome()

    async def _apply_splitting(self, states: list[Reserva]) -> list[StreamFailure]:
        """Apply these states, halving the batch where the store refuses it; the states it refuses on their own."""
        if not states:
            return []
        error = await self._apply(states)
        if error is None:
            return []
        if len(states) == 1:
            return [StreamFailure(states[0].id, states[0].version, None, error)]
        half = len(states) // 2
        return [*await self._apply_splitting(states[:half]), *await self._apply_splitting(states[half:])]

    async def _apply(self, states: list[Reserva]) -> Exception | None:
        """Apply; the error if these states cannot be applied (the store's trouble is raised)."""
        try:
            await self.models.apply(states)
        except Exception as error:  # noqa: BLE001 - anything but the store's trouble is the data's
            if is_transient(error):
                raise
            return error
        return None

    async def _try(self, reserva_id: str) -> StreamFailure | None:
        """Read one stream afresh and apply it alone; its failure, or None when it applied."""
        loaded = await self.source.load([reserva_id])
        if not loaded:
            return None  # no events: nothing to apply
        state = loaded[0]
        if isinstance(state, StreamFailure):
            return state
        error = await self._apply([state])
        return None if error is None else StreamFailure(reserva_id, state.version, None, error)

    async def _locate(self, reserva_id: str) -> StreamFailure | None:
        """Apply the stream one event at a time, up to the first event that cannot be applied: its failure
        (None if every state applies now). The view ends at the state just before it."""
        steps, unreadable = await self.source.steps(reserva_id)
        for tipo, state in steps:
            error = await self._apply([state])
            if error is not None:
                return StreamFailure(reserva_id, state.version, tipo, error)
        return unreadable

    async def _settle(self, suspects: dict[str, StreamFailure | None], attempts: int) -> Outcome:
        """Retry each suspect alone (a failure already seen counts as its first attempt), then set aside
        those that still fail."""
        outcome = Outcome()
        tries = {rid: int(failure is not None) for rid, failure in suspects.items()}
        failing = dict(suspects)
        delay = self.backoff
        while due := [rid for rid in failing if tries[rid] < attempts]:
            if any(tries[rid] for rid in due):
                await asyncio.sleep(delay)
                delay *= 2
            for rid in due:
                tries[rid] += 1
                failing[rid] = await self._try(rid)
                if failing[rid] is None:
                    del failing[rid]
                    outcome.applied.append(rid)
        if failing:
            await self.models.db.command("ping")  # the store answers: these failures are the events' own
        for rid in list(failing):
            located = await self._locate(rid)
            if located is None:  # it applies after all
                del failing[rid]
                outcome.applied.append(rid)
                continue
            await self._set_aside(located, tries[rid])
            outcome.dead_lettered.append(located)
        healed = [rid for rid in outcome.applied if rid in self.known]
        if healed:
            removed = await self.dead_letters.resolve(healed)
            self.known.difference_update(healed)
            self.resolved += removed
            outcome.resolved = healed
            log.info("dead letters applied now: removed", extra={"reserva_ids": healed, "removed": removed})
        return outcome

    async def _set_aside(self, failure: StreamFailure, attempts: int) -> None:
        new = await self.dead_letters.record(failure, attempts, self.by)
        self.known.add(failure.reserva_id)
        self.dead_lettered += 1
        fields = {
            "reserva_id": failure.reserva_id,
            "version": failure.version,
            "tipo": failure.tipo,
            "error": summary(failure.error),
            "attempts": attempts,
        }
        if new:
            log.error(
                "a reservation's event cannot be applied to the read models: set aside as a dead letter and "
                "skipped (see `eventflow projections dead-letters`)",
                extra=fields,
            )
        else:
            log.warning("a dead letter's stream still cannot be applied: skipped again", extra=fields)
