"""Kill: SIGKILL the process running a ticket's refund at random points, then re-run it.

Points: named kill points in the worker (before/after the gateway call, before/after the
ledger write), a seeded random moment, and the gateway process itself dying between its commit
and its answer. `core` workers run the refund step's functions without Prefect (ledger and
gateway layers); `flow` workers run the real `process_ticket` flow on a real Prefect server
(all three layers, the Prefect cache and its leased lock included).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chaos.conftest import SEED, assert_clean
from tests.chaos.harness import Tally, Workers, World, in_parallel, kill_scenario

Worlds = Callable[..., World]


def _kills(new_world: Worlds, workers: Workers, *, kind: str, worlds: int, tickets: int,
           seed: int) -> Tally:
    return in_parallel([new_world(kind) for _ in range(worlds)], lambda world, i: kill_scenario(
        world, workers, tickets=tickets, kind=kind, seed=seed + i, kills_per_ticket=3))


def test_killed_core_workers_refund_every_ticket_exactly_once(
        new_world: Worlds, workers: Workers, tally: Tally) -> None:
    tally.add(_kills(new_world, workers, kind="core", worlds=3, tickets=4, seed=SEED))
    assert_clean(tally)
    assert tally.kills >= 20, tally.line()


def test_killed_prefect_flows_refund_every_ticket_exactly_once(
        new_world: Worlds, workers: Workers, tally: Tally) -> None:
    tally.add(_kills(new_world, workers, kind="flow", worlds=2, tickets=3, seed=SEED + 100))
    assert_clean(tally)
    assert tally.kills >= 10, tally.line()


@pytest.mark.chaos
def test_full_kill_run_core_workers(new_world: Worlds, workers: Workers, tally: Tally) -> None:
    tally.add(_kills(new_world, workers, kind="core", worlds=4, tickets=50, seed=SEED + 1000))
    assert_clean(tally)
    assert tally.kills >= 350, tally.line()


@pytest.mark.chaos
def test_full_kill_run_prefect_flows(new_world: Worlds, workers: Workers, tally: Tally) -> None:
    tally.add(_kills(new_world, workers, kind="flow", worlds=3, tickets=25, seed=SEED + 2000))
    assert_clean(tally)
    assert tally.kills >= 120, tally.line()
