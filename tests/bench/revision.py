"""Which code a system run measures: this checkout, or another git revision (`--baseline REV`).

A baseline is checked out with `git worktree add --detach` into a temporary directory, removed
afterwards. Its services run from there (see cluster.Cluster), and so does the invariant check of
its run: the check reads the services' own documents, whose shapes are the revision's business,
so each revision's data is checked by that revision's tests/reservas/invariants.py, in a child
process with the revision's code first on its path.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Runs in the revision's checkout: only find_violations' keyword arguments and Report's fields are assumed.
_CHECK = """
import asyncio, json, sys
from pymongo import AsyncMongoClient
from tests.reservas.invariants import find_violations

async def main(uri, dbs, allow_pending):
    mongo = AsyncMongoClient(uri, tz_aware=True)
    try:
        report = await find_violations(mongo, allow_pending=allow_pending, **dbs)
    finally:
        await mongo.close()
    reservas = {i: [r.evento_id, str(r.estado), bool(r.settled)] for i, r in report.reservas.items()}
    print(json.dumps({"violations": report.violations, "reservas": reservas}))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "1"))
"""


def pythonpath(code: Path) -> str:
    """PYTHONPATH for code run from a checkout: its packages, then its generated stubs (`eventflow.*`),
    both ahead of the packages installed (editable) from this checkout."""
    return os.pathsep.join([str(code), str(code / "generated")])


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@dataclass(frozen=True)
class Revision:
    """Code to run: `path` is its checkout, None for the one this benchmark runs from."""

    label: str
    commit: str
    path: Path | None = None

    @property
    def root(self) -> Path:
        return self.path or ROOT

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.path is not None:
            env["PYTHONPATH"] = pythonpath(self.path)
        return env


def current() -> Revision:
    """This checkout: its commit, marked when files differ from it (uncommitted changes)."""
    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return Revision("this checkout", "unknown")
    return Revision("this checkout", commit + ("+changes" if changed else ""))


@contextmanager
def checkout(rev: str) -> Iterator[Revision]:
    """`rev` checked out in a temporary git worktree, removed on exit."""
    commit = git("rev-parse", "--short", f"{rev}^{{commit}}")
    where = Path(tempfile.mkdtemp(prefix="eventflow-baseline-"))
    git("worktree", "add", "--detach", str(where), commit)
    try:
        yield Revision(f"baseline {rev}", commit, where)
    finally:
        try:
            git("worktree", "remove", "--force", str(where))
        except subprocess.CalledProcessError as error:
            print(f"note: could not remove the baseline worktree {where}: {error.stderr.strip()}", file=sys.stderr)


@dataclass
class Checked:
    """What the revision's invariant check found: violations, and every reservation's event, state, settledness."""

    violations: list[str] = field(default_factory=list)
    reservas: dict[str, tuple[str, str, bool]] = field(default_factory=dict)

    def unsettled(self) -> list[str]:
        return [rid for rid, (_, _, settled) in self.reservas.items() if not settled]

    def estado(self, reserva_id: str) -> str | None:
        found = self.reservas.get(reserva_id)
        return found[1] if found else None


async def check_invariants(
    revision: Revision, mongo_uri: str, databases: Mapping[str, str], *, allow_pending: bool = False
) -> Checked:
    """DESIGN.md's four invariants over the stored data, by the revision's own check (a child process)."""
    dbs = {f"{service}_db": name for service, name in databases.items()}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHECK, mongo_uri, json.dumps(dbs), "1" if allow_pending else "0",
        cwd=revision.root, env=revision.env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the invariant check of {revision.label} failed: {err.decode()[-2000:]}")
    found = json.loads(out)
    return Checked(found["violations"], {rid: (e, s, ok) for rid, (e, s, ok) in found["reservas"].items()})
