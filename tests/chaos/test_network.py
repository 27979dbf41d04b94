"""Network: each gateway fault at each call of a ticket -> exactly one refund per payment.

Faults (testing/gateway_faults.py): a 500, a reset connection, a response dropped after the refund
committed, a response held past the client's timeout, the gateway killed after its commit.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chaos.conftest import assert_clean
from tests.chaos.harness import Tally, Workers, World, in_parallel, network_scenario

FAULTS = ["error", "reset", "drop", "timeout", "crash"]
Worlds = Callable[..., World]


def test_every_fault_at_every_call_refunds_each_payment_once(
        new_world: Worlds, workers: Workers, tally: Tally) -> None:
    halves = [FAULTS[:3], FAULTS[3:]]
    tally.add(in_parallel([new_world("net"), new_world("net")], lambda world, i: network_scenario(
        world, workers, kind="core", faults=halves[i], positions=("second",))))
    assert_clean(tally)
    assert sum(tally.faults.values()) >= len(FAULTS), tally.line()


@pytest.mark.chaos
def test_full_network_run_core_workers(new_world: Worlds, workers: Workers, tally: Tally) -> None:
    tally.add(network_scenario(new_world("net"), workers, kind="core", faults=FAULTS))
    assert_clean(tally)


@pytest.mark.chaos
def test_full_network_run_through_prefect_flows(
        new_world: Worlds, workers: Workers, tally: Tally) -> None:
    tally.add(network_scenario(new_world("netflow"), workers, kind="flow", faults=FAULTS))
    assert_clean(tally)
