"""Soak: services crash and restart while 20 clients keep buying; afterwards everything settles.

(b) reservas runs as a subprocess and is killed with SIGKILL at random moments (0.5 to 2 s after
    it reports SERVING), 10 times, restarted each time on the same port;
(c) eventos (in-process) is stopped abruptly 5 times while reservas keeps driving sagas, and
    started again on the same port and database after a short outage.
The clients keep buying meanwhile (a mix of payment tokens, unseated tickets and seats); after an
UNAVAILABLE they sometimes repeat the request with its idempotency key. When the clients stop,
every reservation must settle within the hold TTL plus a margin, each repeated key must have
started one saga, what buyers were told must match what is stored, and the four DESIGN.md
invariants must hold.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
import pytest

from eventflow.reservas.v1 import reservas_pb2, reservas_pb2_grpc
from eventos.config import Config as EventosConfig
from eventos.server import create_app as create_eventos
from infra.server import GrpcApp
from reservas.domain import Estado
from reservas.server import create_app as create_reservas
from tests.bench.load import TRANSIENT_CODES
from tests.reservas.conftest import World
from tests.reservas.invariants import one_purchase_per_key
from tests.soak.support import Reservas, Tally, connect, wait_all_settled
from callers import AUTH, PAGE_TOKEN_KEY

CLIENTS = 20
HOLD_TTL = 8.0  # seconds; reservas_process and the in-process reservas of (c) both use it
SETTLE_MARGIN = 30.0
SEATS = [f"{row}-{n}" for row in "AB" for n in range(1, 16)]
TOKENS = ["tok_visa"] * 6 + ["tok_slow"] * 2 + ["tok_declined", "tok_timeout"]

StartApp = Callable[[Awaitable[GrpcApp]], Awaitable[str]]


def seeded() -> random.Random:
    seed = int(os.environ.get("EVENTFLOW_SOAK_SEED", str(random.randrange(10**6))))
    print(f"\nseed {seed}")
    return random.Random(seed)


class Shoppers:
    """CLIENTS buyers, each buying one purchase after another until told to stop."""

    def __init__(self, world: World, stub: reservas_pb2_grpc.ReservasServiceStub, rng: random.Random) -> None:
        self.world, self.stub, self.rng = world, stub, rng
        self.tally = Tally()
        self.repeats = 0
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, general: str, platea: str) -> None:
        usuarios = await self.world.usuarios_n(CLIENTS)
        self.tasks = [asyncio.create_task(self._shop(u, general, platea)) for u in usuarios]

    def _request(self, usuario: str, general: str, platea: str) -> reservas_pb2.ReservarRequest:
        token = self.rng.choice(TOKENS)
        if self.rng.random() < 0.7:
            return self.world.request(usuario, general, cantidad=self.rng.choice((1, 2)), medio_pago=token)
        asientos = self.rng.sample(SEATS, 1)
        return self.world.request(usuario, platea, asientos=asientos, medio_pago=token)

    async def _shop(self, usuario: str, general: str, platea: str) -> None:
        while not self.stop.is_set():
            request = self._request(usuario, general, platea)
            for attempt in range(3):  # the first try, and up to two repeats with the same key
                try:
                    self.tally.ok(await self.stub.Reservar(request, timeout=15))
                    break
                except grpc.aio.AioRpcError as error:
                    transient = self.tally.failed(error).split("/")[0] in TRANSIENT_CODES
                if not transient or self.stop.is_set():
                    break
                await asyncio.sleep(0.3)  # a server restarting: give it a moment
                if attempt == 2 or self.rng.random() < 0.5:
                    break  # give up on this purchase; the next one has a new key
                self.repeats += 1

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


async def settle_and_check(world: World, shoppers: Shoppers, shopped: float) -> None:
    waited = await wait_all_settled(world, timeout=HOLD_TTL + SETTLE_MARGIN)
    report = await world.check()
    counts = {str(e): report.count(e) for e in Estado}
    print(f"{shopped:.0f}s of shopping: {len(report.reservas)} reservations {counts}, "
          f"settled {waited:.0f}s after the clients stopped; {shoppers.repeats} repeats with the same key")  # fmt: skip
    print(f"answers: {dict(shoppers.tally.outcomes.most_common())}")
    why = Counter(r.razon or "-" for r in report.reservas.values() if r.estado is Estado.FALLIDA)
    print(f"why the failed ones failed: {dict(why.most_common())}")
    shoppers.tally.check_against(report)
    one_purchase_per_key(report)
    assert shoppers.tally.outcomes["OK"] > 0, "nothing was bought: the run proved nothing"


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_reservas_killed_at_random_moments_settles_everything(world: World, reservas_process: Reservas) -> None:
    rng = seeded()
    general = await world.evento(aforo=150)
    platea = await world.evento(asientos=SEATS)
    await reservas_process.start()
    stub = reservas_pb2_grpc.ReservasServiceStub(connect(world, reservas_process.address))
    world.reservas = world.connect(reservas_process.address)  # world.stub: GetReserva while settling
    shoppers = Shoppers(world, stub, rng)
    started = time.monotonic()
    await shoppers.start(general.id, platea.id)
    for _ in range(10):
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        reservas_process.kill()
        await reservas_process.start()
    await asyncio.sleep(2.0)  # a last stretch on a process that is not killed
    await shoppers.finish()
    await settle_and_check(world, shoppers, time.monotonic() - started)


async def _ready(app: GrpcApp) -> GrpcApp:
    return app


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_eventos_restarted_mid_run_settles_everything(world: World, start_app: StartApp) -> None:
    rng = seeded()
    general = await world.evento(aforo=150)
    platea = await world.evento(asientos=SEATS)
    config = world.reservas_config(hold_ttl_seconds=HOLD_TTL, payment_slow_seconds=0.5, lease_seconds=2.0)
    world.reservas_address = await start_app(create_reservas(config))
    world.reservas = world.connect(world.reservas_address)
    shoppers = Shoppers(world, world.reservas, rng)
    port = int(world.eventos_address.rsplit(":", 1)[1])
    eventos_config = EventosConfig(
        auth=AUTH, port=port, bind_host="127.0.0.1", mongodb_uri=world.mongo_uri, mongodb_database=world.dbs["eventos"],
        page_token_key=PAGE_TOKEN_KEY,
    )
    started = time.monotonic()
    await shoppers.start(general.id, platea.id)
    for _ in range(5):
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        await world.eventos_app.stop(grace=0)  # in-flight calls are cut off: their outcome is unknown to reservas
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        world.eventos_app = await create_eventos(eventos_config)
        await start_app(_ready(world.eventos_app))
    await asyncio.sleep(2.0)
    await shoppers.finish()
    await settle_and_check(world, shoppers, time.monotonic() - started)
