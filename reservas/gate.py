"""The admission gate: a per-event count in Redis of the tickets a purchase may still try to take.

A purchase passes the gate before anything is recorded for it. For a sold-out event the gate
answers SOLD_OUT from Redis in one round trip, so that answer costs no MongoDB command and
leaves no trace; every other purchase goes on to the saga, which still takes its tickets in
eventos. eventos is the authority: the gate only decides who may *try*. Losing Redis's data,
or Redis being down, can slow a sale (more purchases reach eventos, which refuses the excess),
never oversell it.

Keys, per event, all with the hash tag `{evento_id}` so that one script touches one Cluster slot:

- `gate:{E}`, a hash: `disp` and `ver` (eventos' `entradas_disponibles` and
  `inventario_version` as last reported: eventos increments the version with every inventory
  change and returns both together), `psum` (tickets admitted and not reported back yet),
  `refreshed` (ms of the last report that was not older than the snapshot), `probe` (ms until
  which one caller is refreshing), and `q:<reserva_id>` = cantidad of each pending admission;
- `gate:{E}:p`, a sorted set reserva_id -> admission time (ms): the pending admissions. It
  decides membership (an entry counts in `psum` iff it is here), and lets expiry find the old
  ones in O(log n + k);
- `gate:{E}:k:<sha256 of [usuario_id, idempotency_key] as compact JSON>`, the marker of an
  idempotency key admitted: its value is the reserva_id it was admitted as, TTL `key_ttl`.

The hash and the set always get the same TTL (`key_ttl`, refreshed by every script that writes
them), so an idle event's gate disappears and is seeded again on its next purchase.

## The calls, in the order a purchase makes them

`admit` (one script): the key's marker exists -> REPEAT (with the reserva_id it names); no
snapshot -> UNSEEDED; last report older than `refresh_seconds` and this caller wins the probe
-> REFRESH; then pending admissions older than `pending_ttl_seconds` are dropped (sagas that
died without reporting); then `disp - psum >= cantidad` -> ADMITTED (pending entry, psum,
marker) else SOLD_OUT. `admit_seeding` wraps it: on UNSEEDED / REFRESH it reads the event from
eventos through a callback, reports what it read, and admits again.

`report` (one script): eventos answered with its inventory (ReservarEntradas' or
LiberarEntradas' reply, a SOLD_OUT/SEAT_TAKEN error's metadata, GetEvento's event). Drops
reserva_id's pending entry if any (idempotent), takes (disp, ver) if ver is newer than the
snapshot's (or there is none), and stamps `refreshed` unless the report was older.

`forget`: the saga ended before asking eventos for tickets: drop its pending entry, keep the
marker (a repeat is answered from the recorded reservation). `withdraw`: the admission was
never used (the idempotency claim failed, or found the key taken by another reservation):
drop the pending entry and the marker if it names this reservation, so the key's next attempt
is admitted afresh.

Redis unreachable, slow (the client's socket timeout) or refusing: `admit` returns
UNAVAILABLE, meaning "no gate: go the normal path"; `report`, `forget` and `withdraw` log and
return. The gate never makes a purchase fail by itself. After a failure `admit` answers
UNAVAILABLE without asking Redis for `outage_backoff_seconds`, so an outage costs one timeout
per period, not one per purchase (the other calls always try: they are once per saga).

The client decides how long "slow" is. Give the gate one made by `connect()`: redis-py's
defaults retry a failed command 10 times with backoff (seconds per call while Redis is down),
and its asyncio pool raises past 100 connections in use (that surfaces as UNAVAILABLE: the
purchases go the normal path, where eventos decides).

## What the caller (Reservar) does

1. After checking the request's fields and before the idempotency claim:
   `a = await gate.admit_seeding(evento_id, read_inventory, reserva_id=new_id, usuario_id=...,
   idempotency_key=..., cantidad=...)`, where `read_inventory` reads GetEvento and returns
   `Inventory(entradas_disponibles, inventario_version)`. SOLD_OUT: answer SOLD_OUT (with
   `a.disponibles`), record nothing. Otherwise go on under `a.reserva_id` (ADMITTED: yours;
   REPEAT: the key's admitted one; UNAVAILABLE: yours, ungated).
2. Claim the key with `a.reserva_id`. If the claim fails, or returns another reservation, and
   `a.outcome` is ADMITTED: `withdraw(...)` that admission.
3. The key's reservation failed only because of an outage (the retry case): admit again with
   a new id and `replacing=<that reservation>`; SOLD_OUT: answer it; otherwise re-point the
   key to the new `a.reserva_id`, and `withdraw` if the re-point follows another id and
   `a.outcome` is ADMITTED.
4. In the saga, under its reserva_id, whatever the admission said (these calls are harmless
   for a reservation with no pending entry): `report(..., reserva_id=...)` with eventos'
   (entradas_disponibles, inventario_version) after every ReservarEntradas reply, SOLD_OUT or
   SEAT_TAKEN error (their metadata), and LiberarEntradas reply (compensations, cancellations,
   recovery); `forget(evento_id, reserva_id)` when the saga ends before ReservarEntradas was
   sent. A ReservarEntradas whose outcome is unknown (timeout) is not forgotten: its
   compensation's LiberarEntradas reply is reported, or the entry expires.

## Why it is right

(a) Never more than `disp - psum` admitted. The check and the increment of psum are one script,
so concurrent admissions are serialised by Redis; each ADMITTED leaves `disp - psum >= 0`.
Every ticket a gated saga may still take in eventos after the snapshot's version is in psum (it
was admitted and has not reported), so `disp - psum` is a lower bound of what eventos will have
left once every admitted saga has taken. The exceptions, all bounded and all refused by eventos
when it has nothing left: changes made outside the saga (an admin lowering the capacity) until
the next report; an entry that expired while its saga still ran; sagas that went ungated
(UNAVAILABLE), or were admitted before Redis lost its data (d).

(b) No lasting false SOLD_OUT. Once every in-flight saga has reported (or its entry expired),
psum = 0 and `disp` is eventos' count as of the newest version reported. Every later inventory
change either comes from a saga or a cancellation, whose reply is reported with a newer version,
or from outside (an admin): then within `refresh_seconds` of the last up-to-date report the
next admission gets REFRESH, its caller reports GetEvento, and the snapshot is current. If that
caller dies the probe lapses after `refresh_seconds` and another caller gets it. So the gate
says SOLD_OUT while eventos has tickets for at most `refresh_seconds` plus one read.

(c) Out-of-order reports keep the newest: `disp` and `ver` change only together and only for a
larger version. (disp, ver) is one atomic read of one eventos document, so a report read from a
lagging secondary is an older consistent pair, not a torn one.

(d) Redis losing its data (restart without persistence, FLUSHALL, eviction): no hash -> every
admission is UNSEEDED until a caller reports GetEvento; psum restarts at 0, so sagas admitted
before the loss are not counted and the gate may admit more than the tickets left until they
take (eventos refuses the excess) and report (their newer versions fix the snapshot). Markers
lost make a repeat look new: it is admitted, its claim finds the recorded reservation, and the
admission is withdrawn. A lost pending set with a surviving hash is healed: psum is reset when
the set is empty, and entries are dropped only if they are in the set.

(e) Double subtraction. When a saga's take is already in a newer snapshot (another saga's reply
came back first) while its pending entry is still counted, its tickets are subtracted twice:
the gate errs towards SOLD_OUT, and only until that saga reports, which it does right after its
take. The opposite error (an entry dropped while its take is not in the snapshot) cannot
happen: the saga's own report carries a version at least as new as its take, so if that report
is older than the snapshot the snapshot already contains the take.

## Idempotency keys and retries

REPEAT carries the reserva_id the key was admitted as: the caller runs its purchase under that
id (`Admission.reserva_id`, whatever the outcome), so a repeat whose first attempt died between
the admission and the idempotency claim reuses that admission. When the key's recorded attempt
failed only because of an outage, the retry calls `admit(..., replacing=<that reserva_id>)`: the
marker is compared-and-swapped, as the claim is re-pointed in MongoDB, so exactly one retry per
failed attempt passes; a concurrent retry gets REPEAT with the winner's id and re-points to it.
The failed attempt already reported or forgot its entry, so nothing needs undoing on the failure
path (which runs during an outage, possibly of Redis itself).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis.asyncio
from redis.exceptions import RedisError

from infra.redis_client import connect  # noqa: F401 - the client the gate expects (re-exported for its callers)
from reservas.metrics import ReservasMetrics

try:
    from redis.exceptions import MaxConnectionsError
except ImportError:  # redis-py < 6: its pools had no limit by default
    MaxConnectionsError = type("MaxConnectionsError", (RedisError,), {})  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

_LOG_EVERY_SECONDS = 5.0  # an outage at thousands of purchases/s logs once per period, not per call

# Shared by the scripts. now_ms: ARGV's clock if given (tests), else the server's (one clock for
# every reservas replica). drop: remove a pending entry; membership is decided by the sorted set.
_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function drop(gate, pending, reserva_id)
  local field = 'q:' .. reserva_id
  if redis.call('ZREM', pending, reserva_id) == 1 then
    local q = tonumber(redis.call('HGET', gate, field) or '0')
    if q ~= 0 then redis.call('HINCRBY', gate, 'psum', -q) end
  end
  redis.call('HDEL', gate, field)
end
local function touch(gate, pending, ttl)
  redis.call('PEXPIRE', gate, ttl)
  redis.call('PEXPIRE', pending, ttl)
end
"""

# KEYS[1]: the gate hash; KEYS[2]: the pending set; KEYS[3]: the key's marker.
# ARGV[1]: reserva_id; ARGV[2]: cantidad; ARGV[3]: replacing ('' for none); ARGV[4]: now in ms
# ('' for the server's clock); ARGV[5]: refresh ms; ARGV[6]: pending ttl ms; ARGV[7]: key ttl ms.
# Returns {outcome, disponibles (-1: unknown), reserva_id to run the purchase under}.
_ADMIT = _PRELUDE + """
local gate, pending, marker_key = KEYS[1], KEYS[2], KEYS[3]
local reserva_id, cantidad, replacing = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local marker = redis.call('GET', marker_key)
if marker and marker ~= replacing and not (marker == reserva_id and redis.call('ZSCORE', pending, reserva_id)) then
  return {'REPEAT', -1, marker}
end
local h = redis.call('HMGET', gate, 'disp', 'psum', 'refreshed', 'probe')
if not h[1] then
  return {'UNSEEDED', -1, reserva_id}
end
local now = now_ms(ARGV[4])
local refresh_ms = tonumber(ARGV[5])
if now - tonumber(h[3] or '0') >= refresh_ms and now >= tonumber(h[4] or '0') then
  redis.call('HSET', gate, 'probe', now + refresh_ms)
  return {'REFRESH', -1, reserva_id}
end
local disp, psum = tonumber(h[1]), tonumber(h[2] or '0')
-- at most 1000 per call, to bound one script's work; the rest expire on the next calls
local expired = redis.call('ZRANGEBYSCORE', pending, '-inf', now - tonumber(ARGV[6]), 'LIMIT', 0, 1000)
for _, old in ipairs(expired) do
  drop(gate, pending, old)
end
if #expired > 0 then
  psum = tonumber(redis.call('HGET', gate, 'psum') or '0')
end
if psum ~= 0 and redis.call('ZCARD', pending) == 0 then
  redis.call('HSET', gate, 'psum', 0)  -- the set was lost while the hash survived
  psum = 0
end
if redis.call('ZSCORE', pending, reserva_id) then
  return {'ADMITTED', math.max(0, disp - psum), reserva_id}  -- this admission again (a retried call)
end
if disp - psum < cantidad then
  return {'SOLD_OUT', math.max(0, disp - psum), reserva_id, redis.call('HGET', gate, 'complete') or '0'}
end
redis.call('HSET', gate, 'q:' .. reserva_id, cantidad)
redis.call('HINCRBY', gate, 'psum', cantidad)
redis.call('ZADD', pending, now, reserva_id)
redis.call('SET', marker_key, reserva_id, 'PX', ARGV[7])
touch(gate, pending, ARGV[7])
return {'ADMITTED', disp - psum - cantidad, reserva_id}
"""

# KEYS[1]: the gate hash; KEYS[2]: the pending set.
# ARGV[1]: disponibles; ARGV[2]: version; ARGV[3]: reserva_id ('' for none); ARGV[4]: now in ms
# ('' for the server's clock); ARGV[5]: key ttl ms.
# Returns the tickets the gate now lets through (disp - psum).
_REPORT = _PRELUDE + """
local gate, pending = KEYS[1], KEYS[2]
if ARGV[3] ~= '' then
  drop(gate, pending, ARGV[3])
end
local version = tonumber(ARGV[2])
local ver = redis.call('HGET', gate, 'ver')
local now = now_ms(ARGV[4])
if not ver then
  -- seeded by this report: its markers are complete only if no ticket was sold before (ARGV[6] = '1')
  redis.call('HSET', gate, 'disp', ARGV[1], 'ver', ARGV[2], 'refreshed', now, 'complete', ARGV[6] == '1' and '1' or '0')
elseif version > tonumber(ver) then
  redis.call('HSET', gate, 'disp', ARGV[1], 'ver', ARGV[2], 'refreshed', now)
elseif version == tonumber(ver) then
  redis.call('HSET', gate, 'refreshed', now)
end
touch(gate, pending, ARGV[5])
local h = redis.call('HMGET', gate, 'disp', 'psum')
return tonumber(h[1]) - tonumber(h[2] or '0')
"""

# KEYS[1]: the gate hash; KEYS[2]: the pending set; KEYS[3] (optional): the key's marker.
# ARGV[1]: reserva_id. Drops its pending entry, and the marker if it names reserva_id. Returns 0.
_FORGET = _PRELUDE + """
drop(KEYS[1], KEYS[2], ARGV[1])
if KEYS[3] and redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
end
return 0
"""


class Outcome(enum.Enum):
    """What the gate says about one purchase."""

    ADMITTED = "ADMITTED"  # go on: the tickets are counted as pending for Admission.reserva_id
    SOLD_OUT = "SOLD_OUT"  # answer SOLD_OUT; nothing was recorded, nothing to undo
    REPEAT = "REPEAT"  # the key was admitted before: go the normal path under Admission.reserva_id
    UNSEEDED = "UNSEEDED"  # no snapshot: read the event, report it, admit again
    REFRESH = "REFRESH"  # this caller refreshes the snapshot: read the event, report it, admit again
    UNAVAILABLE = "UNAVAILABLE"  # Redis did not answer: no gate, go the normal path

    @property
    def proceeds(self) -> bool:
        """The purchase goes on to the idempotency claim and the saga."""
        return self in (Outcome.ADMITTED, Outcome.REPEAT, Outcome.UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class Admission:
    outcome: Outcome
    #: The reservation to run the purchase under: the caller's own id, or for REPEAT the id the
    #: key was admitted as.
    reserva_id: str
    #: Tickets the gate still lets through after this call (ADMITTED, SOLD_OUT); None otherwise.
    disponibles: int | None = None
    #: For SOLD_OUT: whether the gate has seen every key that bought (it was seeded before the first
    #: sale). When not (Redis lost its data mid-sale), a key without a marker may still stand for a
    #: recorded purchase, and the caller checks before answering SOLD_OUT.
    markers_complete: bool = field(default=True, compare=False)


class Inventory(NamedTuple):
    """An event's inventory as eventos reported it: one atomic read of its document."""

    disponibles: int
    version: int
    #: aforo_total, when read: disponibles == aforo means nothing was sold yet.
    aforo: int | None = None


@dataclass(frozen=True, slots=True)
class GateState:
    """What the gate holds for an event (for tests, metrics and operators)."""

    disp: int
    ver: int
    psum: int
    refreshed_ms: int
    pending: dict[str, int]  # reserva_id -> cantidad

    @property
    def disponibles(self) -> int:
        return max(0, self.disp - self.psum)


ReadInventory = Callable[[], Awaitable[Inventory]]


def key_digest(usuario_id: str, idempotency_key: str) -> str:
    """sha256 of [usuario_id, idempotency_key] as compact JSON (unambiguous whatever the strings hold)."""
    raw = json.dumps([usuario_id, idempotency_key], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def _tag(evento_id: str) -> str:
    """The hash tag: the id itself when Redis Cluster would read it whole, else a digest of it."""
    if evento_id and "{" not in evento_id and "}" not in evento_id:
        return evento_id
    return "h-" + hashlib.sha256(evento_id.encode()).hexdigest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _positive_ms(name: str, seconds: float) -> int:
    ms = int(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"{name} must be positive, got {seconds}")
    return ms


class AdmissionGate:
    """Per-event admission of purchases, counted in Redis. See the module docstring for the contract.

    `clock` (ms) replaces the Redis server's clock; only tests pass it. `metrics` (reservas.metrics) counts
    the answers of `admit_seeding` and keeps the inventory eventos reports, per event.
    """

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        *,
        refresh_seconds: float = 2.0,
        pending_ttl_seconds: float = 60.0,
        key_ttl_seconds: float = 7 * 24 * 3600,
        outage_backoff_seconds: float = 1.0,
        prefix: str = "gate",
        clock: Callable[[], int] | None = None,
        metrics: ReservasMetrics | None = None,
    ) -> None:
        self._redis = redis
        self.metrics = metrics or ReservasMetrics()
        self.refresh_ms = _positive_ms("refresh_seconds", refresh_seconds)
        self.pending_ttl_ms = _positive_ms("pending_ttl_seconds", pending_ttl_seconds)
        self.key_ttl_ms = _positive_ms("key_ttl_seconds", key_ttl_seconds)
        if self.key_ttl_ms < self.pending_ttl_ms:
            raise ValueError("key_ttl_seconds must be at least pending_ttl_seconds")
        self.outage_backoff_seconds = max(0.0, float(outage_backoff_seconds))
        self.prefix = prefix
        self._clock = clock
        self._skip_until = 0.0  # monotonic: admit answers UNAVAILABLE without asking Redis until then
        self._admit = redis.register_script(_ADMIT)
        self._report = redis.register_script(_REPORT)
        self._forget = redis.register_script(_FORGET)
        self._last_warning = 0.0

    # ---- keys --------------------------------------------------------------------------------

    def keys(self, evento_id: str) -> tuple[str, str]:
        """The gate hash and the pending set of an event."""
        base = f"{self.prefix}:{{{_tag(evento_id)}}}"
        return base, f"{base}:p"

    def marker(self, evento_id: str, usuario_id: str, idempotency_key: str) -> str:
        base = f"{self.prefix}:{{{_tag(evento_id)}}}"
        return f"{base}:k:{key_digest(usuario_id, idempotency_key)}"

    def _now(self) -> str:
        return "" if self._clock is None else str(int(self._clock()))

    # ---- the calls ---------------------------------------------------------------------------

    async def admit(
        self,
        evento_id: str,
        *,
        reserva_id: str,
        usuario_id: str,
        idempotency_key: str,
        cantidad: int,
        replacing: str | None = None,
    ) -> Admission:
        """Whether a purchase of `cantidad` tickets may go on to the saga. One round trip.

        `replacing`: the reserva_id of the key's recorded attempt that failed only because of an
        outage, when this is the client's retry of it (see the module docstring).
        Never raises for Redis trouble: returns UNAVAILABLE.
        """
        if cantidad < 1:
            raise ValueError(f"cantidad must be positive, got {cantidad}")
        if time.monotonic() < self._skip_until:
            return Admission(Outcome.UNAVAILABLE, reserva_id)
        gate, pending = self.keys(evento_id)
        args = [
            reserva_id,
            int(cantidad),
            replacing or "",
            self._now(),
            self.refresh_ms,
            self.pending_ttl_ms,
            self.key_ttl_ms,
        ]
        try:
            reply = await self._admit(keys=[gate, pending, self.marker(evento_id, usuario_id, idempotency_key)], args=args)
        except (RedisError, OSError) as error:
            if not isinstance(error, MaxConnectionsError):  # a busy pool is not an outage
                self._skip_until = time.monotonic() + self.outage_backoff_seconds
            self._warn("admit", evento_id, reserva_id, error)
            return Admission(Outcome.UNAVAILABLE, reserva_id)
        outcome, disponibles, admitted_as = Outcome(_text(reply[0])), int(reply[1]), _text(reply[2])
        complete = len(reply) < 4 or _text(reply[3]) == "1"
        return Admission(outcome, admitted_as, None if disponibles < 0 else disponibles, markers_complete=complete)

    async def admit_seeding(
        self,
        evento_id: str,
        read_inventory: ReadInventory,
        *,
        reserva_id: str,
        usuario_id: str,
        idempotency_key: str,
        cantidad: int,
        replacing: str | None = None,
    ) -> Admission:
        """`admit`, handling UNSEEDED and REFRESH: read the event with `read_inventory`, report it, admit again.

        Returns ADMITTED, REPEAT, SOLD_OUT or UNAVAILABLE (also when the event cannot be read to
        seed the gate: the normal path meets that failure itself). A failed read on REFRESH
        admits against the snapshot the gate has.
        """
        for _ in range(3):
            admission = await self.admit(
                evento_id,
                reserva_id=reserva_id,
                usuario_id=usuario_id,
                idempotency_key=idempotency_key,
                cantidad=cantidad,
                replacing=replacing,
            )
            if admission.outcome not in (Outcome.UNSEEDED, Outcome.REFRESH):
                self.metrics.gate_admissions.labels(admission.outcome.value).inc()
                return admission
            try:
                inventory = await read_inventory()
            except Exception as error:  # noqa: BLE001 - eventos' failure is the normal path's to report
                self._warn("read_inventory", evento_id, reserva_id, error)
                if admission.outcome is Outcome.UNSEEDED:
                    self.metrics.gate_admissions.labels(Outcome.UNAVAILABLE.value).inc()
                    return Admission(Outcome.UNAVAILABLE, reserva_id)
                continue  # REFRESH: the probe is ours for refresh_seconds; admit on the snapshot
            await self.report(
                evento_id,
                disponibles=inventory.disponibles,
                version=inventory.version,
                unsold=inventory.aforo is not None and inventory.disponibles == inventory.aforo,
            )
        self.metrics.gate_admissions.labels(Outcome.UNAVAILABLE.value).inc()
        return Admission(Outcome.UNAVAILABLE, reserva_id)  # the snapshot keeps vanishing: no gate

    async def report(
        self,
        evento_id: str,
        *,
        disponibles: int,
        version: int,
        reserva_id: str | None = None,
        unsold: bool = False,
    ) -> None:
        """eventos answered with the event's inventory (`disponibles` at `version`).

        `reserva_id`: the saga whose ReservarEntradas / LiberarEntradas this answers; its pending
        entry is dropped (idempotent). `unsold`: no ticket of the event was ever sold at this version
        (disponibles == aforo_total), so a gate this report seeds has seen every key that bought: its
        markers are complete. Never raises for Redis trouble.
        """
        if disponibles < 0 or version < 0:
            raise ValueError(f"disponibles and version must not be negative, got {disponibles}, {version}")
        self.metrics.tickets_left.note(evento_id, disponibles, version)
        gate, pending = self.keys(evento_id)
        args = [int(disponibles), int(version), reserva_id or "", self._now(), self.key_ttl_ms, "1" if unsold else "0"]
        try:
            await self._report(keys=[gate, pending], args=args)
        except (RedisError, OSError) as error:
            self._warn("report", evento_id, reserva_id, error)

    async def mark(self, evento_id: str, *, reserva_id: str, usuario_id: str, idempotency_key: str) -> None:
        """Remember that this key bought as `reserva_id`, for a purchase that went ungated (its admission
        was UNAVAILABLE): a repeat after a sell-out is then REPEAT, not SOLD_OUT. Never raises."""
        try:
            await self._redis.set(
                self.marker(evento_id, usuario_id, idempotency_key), reserva_id, nx=True, px=self.key_ttl_ms
            )
        except (RedisError, OSError) as error:
            self._warn("mark", evento_id, reserva_id, error)

    async def forget(self, evento_id: str, reserva_id: str) -> None:
        """The saga ended before asking eventos for tickets: drop its pending entry (idempotent).

        The key's marker stays: a repeat is answered from the recorded reservation.
        """
        gate, pending = self.keys(evento_id)
        try:
            await self._forget(keys=[gate, pending], args=[reserva_id])
        except (RedisError, OSError) as error:
            self._warn("forget", evento_id, reserva_id, error)

    async def withdraw(self, evento_id: str, *, reserva_id: str, usuario_id: str, idempotency_key: str) -> None:
        """The admission was never used: nothing was recorded under `reserva_id` for this key.

        For an ADMITTED purchase whose idempotency claim failed, or found (or was re-pointed to)
        another reservation. Drops the pending entry, and the key's marker if it names
        `reserva_id`, so the key's next attempt is admitted afresh. Idempotent.
        """
        gate, pending = self.keys(evento_id)
        marker = self.marker(evento_id, usuario_id, idempotency_key)
        try:
            await self._forget(keys=[gate, pending, marker], args=[reserva_id])
        except (RedisError, OSError) as error:
            self._warn("withdraw", evento_id, reserva_id, error)

    async def state(self, evento_id: str) -> GateState | None:
        """The event's snapshot and pending admissions (None: not seeded). Raises RedisError."""
        gate, pending = self.keys(evento_id)
        fields = {_text(k): _text(v) for k, v in (await self._redis.hgetall(gate)).items()}
        if "disp" not in fields:
            return None
        members = {_text(m) for m in await self._redis.zrange(pending, 0, -1)}
        return GateState(
            disp=int(fields["disp"]),
            ver=int(fields["ver"]),
            psum=int(fields.get("psum", 0)),
            refreshed_ms=int(fields.get("refreshed", 0)),
            pending={r: int(fields.get(f"q:{r}", 0)) for r in members},
        )

    def _warn(self, call: str, evento_id: str, reserva_id: str | None, error: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning < _LOG_EVERY_SECONDS:
            return
        self._last_warning = now
        log.warning(
            "admission gate unavailable: going without it",
            extra={"call": call, "evento_id": evento_id, "reserva_id": reserva_id, "error": type(error).__name__},
        )
