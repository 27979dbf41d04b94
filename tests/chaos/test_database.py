"""Database: the billing database (a private PostgreSQL cluster) restarts in the middle of a
batch of refunds; every ticket still ends with exactly its refunds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.chaos.conftest import assert_clean
from tests.chaos.harness import (
    SETTLE_BUDGET_S,
    Job,
    PrivatePostgres,
    Tally,
    Workers,
    World,
    settle,
)

Worlds = Callable[..., World]


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster started by the test, deleted after it."""
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()


def _batch(world: World, workers: Workers, pg: PrivatePostgres, tally: Tally, *,
           tickets: int, restarts: int) -> None:
    env = world.env()
    expected = [world.approved_ticket(2) for _ in range(tickets)]
    kinds = ["flow" if i % 2 else "core" for i in range(tickets)]
    procs = [workers.start(Job(kind, env, exp.ticket_id)) for kind, exp in
             zip(kinds, expected, strict=True)]
    tally.runs += len(procs)
    for _ in range(restarts):
        time.sleep(0.5)
        pg.restart()
    for proc in procs:
        proc.join(120)
        proc.close()
    for kind, exp in zip(kinds, expected, strict=True):
        settle(world, workers, exp, kind, env, tally, budget_s=SETTLE_BUDGET_S)
        world.check(exp, tally)


def test_batch_completes_across_a_database_restart(
        new_world: Worlds, workers: Workers, private_pg: PrivatePostgres, tally: Tally) -> None:
    world = new_world("pg", billing_url=private_pg.url)
    _batch(world, workers, private_pg, tally, tickets=4, restarts=1)
    tally.scenarios["database/restart-mid-batch"] += 1
    assert_clean(tally)


@pytest.mark.chaos
def test_full_batch_completes_across_database_restarts(
        new_world: Worlds, workers: Workers, private_pg: PrivatePostgres, tally: Tally) -> None:
    world = new_world("pg", billing_url=private_pg.url)
    _batch(world, workers, private_pg, tally, tickets=20, restarts=3)
    tally.scenarios["database/restarts-mid-batch"] += 1
    assert_clean(tally)
