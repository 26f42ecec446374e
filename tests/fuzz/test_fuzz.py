"""Fuzzing a running `eventflow up`: calls generated from the services' descriptors (tests/fuzz/generate.py).

One test: start the stack (as tests/e2e does: a subprocess on free ports with a temporary data directory),
make a scene (tests/fuzz/scene.py), mint tokens with `eventflow token`, send FUZZ_CALLS calls across every
RPC, then check that

- no call got INTERNAL or UNKNOWN, every call without a valid token got UNAUTHENTICATED, and every call the
  access table does not allow got PERMISSION_DENIED (tests/fuzz/oracle.py);
- no process of the stack died (the launcher and each process it started are running, every service
  reports SERVING);
- once every saga has settled, the four invariants of DESIGN.md hold (tests/reservas/invariants.py, on the
  stack's own databases), after the fuzzer's own servicio calls are undone (see tests/fuzz/generate.py).

It prints calls per RPC, per status code and per kind of token, and the elapsed time. `make test` runs 300
calls; `make fuzz` runs 10,000 (FUZZ_CALLS=n for another number, FUZZ_SEED=n for another sequence: the same
seed draws the same calls, FUZZ_CONCURRENCY=n calls in flight, 1 to replay them strictly in order).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from pymongo import AsyncMongoClient

from infra.auth import Role
from infra.procs import free_port
from tests.e2e.test_e2e_stack import (
    SERVICE_NAMES,
    StackUnderTest,
    _require_all_services,
    _stack_env,
    alive,
    cmdline,
    eventflow_token,
)
from tests.fuzz import scene
from tests.fuzz.generate import RPCS, Call, Caller, Kind, Pool, calls
from tests.fuzz.runner import Runner
from tests.fuzz.tokens import Tokens
from tests.reservas.invariants import Report, check_invariants, find_violations

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

CALLS = int(os.environ.get("FUZZ_CALLS", "300"))
SEED = int(os.environ.get("FUZZ_SEED", "8"))
CONCURRENCY = int(os.environ.get("FUZZ_CONCURRENCY", "8"))
#: How long the sagas in flight (a slow card takes 3 s, a crashed saga waits for recovery) may take to settle.
SETTLE_SECONDS = 120
#: A saga step and the compensation that undoes it (DESIGN.md): how the fuzzer undoes its own servicio calls.
UNDO = {"ReservarEntradas": "LiberarEntradas", "RegistrarCompra": "AnularCompra"}
DATABASES = {
    "usuarios_db": os.environ.get("USUARIOS_MONGODB_DATABASE") or "eventflow_usuarios",
    "eventos_db": os.environ.get("EVENTOS_MONGODB_DATABASE") or "eventflow_eventos",
    "reservas_db": os.environ.get("RESERVAS_MONGODB_DATABASE") or "eventflow_reservas",
}
#: The per-identity rate limit would answer most of a flood RESOURCE_EXHAUSTED and hide what lies behind it.
NO_RATE_LIMITS = {f"EVENTFLOW_RATE_LIMIT_{role.upper()}": "off" for role in Role}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackUnderTest]:
    """`eventflow up` with the demo data, on free ports, for this module alone."""
    _require_all_services()
    ports = {name: free_port() for name in ["mongodb", "redis", *SERVICE_NAMES]}
    under_test = StackUnderTest(_stack_env(ports) | NO_RATE_LIMITS, tmp_path_factory.mktemp("fuzz") / "data", ports)
    under_test.launch()
    yield under_test
    for launcher in under_test.launchers:
        launcher.cleanup()


def mint_tokens(stack: StackUnderTest, pool: Pool) -> Tokens:
    """Tokens from `eventflow token`, as a person makes them: servicio, and a cliente for each scene user and
    for one that does not exist; the admin token is the one `eventflow up` printed."""
    usuarios = [*scene.scene_usuarios(pool), "fuzz-no-such-usuario"]
    commands = [("--role", "servicio", "--ttl", "8h")] + [("--role", "cliente", "--usuario", u, "--ttl", "8h")
                                                          for u in usuarios]  # fmt: skip
    with ThreadPoolExecutor(max_workers=4) as workers:
        minted = list(workers.map(lambda args: eventflow_token(stack, *args), commands))
    return Tokens.load(stack.data_dir / "keys", stack.token, minted[0], dict(zip(usuarios, minted[1:], strict=True)))


def send(runner: Runner, pool: Pool, tokens: Tokens, n: int) -> None:
    """`n` calls drawn from FUZZ_SEED (the same seed and scene draw the same calls), every RPC its share.

    Each RPC gets n / len(RPCS) calls of its own (the first ones one more when it does not divide): drawn
    from one list, a short run would leave some RPC out, as hypothesis does not spread its choices evenly.
    They are drawn first, then sent in an order shuffled by the seed, so the RPCs interleave as callers would.
    """
    drawn: list[Call] = []
    share, extra = divmod(n, len(RPCS))
    for index, rpc in enumerate(RPCS):
        wanted = len(drawn) + share + (index < extra)
        rounds = 0
        while len(drawn) < wanted:  # hypothesis may end a round early: go on with the next seed

            @seed(SEED + 1000 * index + rounds)
            @settings(max_examples=wanted - len(drawn), database=None, deadline=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)  # fmt: skip
            @given(calls(pool, tokens, (rpc,)))
            def fuzz(call: Call) -> None:
                drawn.append(call)

            fuzz()
            rounds += 1
    random.Random(SEED).shuffle(drawn)
    for call in drawn:
        runner.submit(call)


def undo_servicio_calls(runner: Runner) -> list[str]:
    """Undo what the fuzzer's own servicio calls took or recorded; returns any problem the undo met."""
    by_name = {rpc.name: rpc for rpc in RPCS}
    problems, done = [], set()
    for call in runner.internal:
        target = by_name.get(UNDO.get(call.rpc.name, ""))
        if target is None:
            continue
        request = target.request_class()
        for field in target.method.input_type.fields:  # the compensation names what the step named
            setattr(request, field.name, getattr(call.request, field.name))
        key = (target.name, request.SerializeToString())
        if key in done:
            continue
        done.add(key)
        outcome = runner.call(Call(target, Caller(Kind.VALID, "servicio", call.caller.metadata, Role.SERVICIO),
                                   "undo", request))  # fmt: skip
        if outcome.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            problems.append(f"undoing {call.rpc.name} with {target.name}: {outcome}")
    return problems


def serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def settled_invariants(mongo_uri: str) -> Report:
    """Wait for every saga and cancellation to settle, then check the four invariants."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri)
    try:
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            report = await find_violations(client, **DATABASES)
            if not any("has not settled" in v for v in report.violations):
                break
            await asyncio.sleep(0.5)
        return await check_invariants(client, **DATABASES)
    finally:
        await client.close()


@pytest.mark.timeout(180 + CALLS // 10)
def test_fuzz_every_rpc(stack: StackUnderTest) -> None:
    addresses = {name: stack.address(name) for name in SERVICE_NAMES}
    pool = scene.build(addresses, stack.token)
    tokens = mint_tokens(stack, pool)
    launcher = stack.launchers[0]
    processes = {pid: cmdline(pid) for pid in launcher.started}

    runner = Runner(addresses, pool, RPCS, concurrency=CONCURRENCY)
    try:
        send(runner, pool, tokens, CALLS)
        tally = runner.drain()
        undo_problems = undo_servicio_calls(runner)
    finally:
        runner.close()
    report = tally.report(RPCS)
    print("\n" + report)

    uncalled = {rpc.name for rpc in RPCS} - {name for name, _ in tally.per_rpc}
    assert tally.calls == CALLS and not uncalled, f"{tally.calls} calls of {CALLS}; never called: {uncalled}"
    assert not tally.problems, report
    assert not undo_problems, undo_problems

    assert launcher.proc is not None and launcher.proc.poll() is None, f"eventflow up exited:\n{launcher.output}"
    dead = [command for pid, command in processes.items() if not alive(pid)]
    assert not dead, f"processes of the stack died: {dead}\n{launcher.output}"
    assert all(serving(address) for address in addresses.values()), "a service no longer reports SERVING"

    mongo_uri = f"mongodb://127.0.0.1:{stack.ports['mongodb']}/?directConnection=true"
    checked = asyncio.run(settled_invariants(mongo_uri))
    print(f"invariants hold over {len(checked.reservas)} reservations")

