"""One layer at a time: with two of the three exactly-once layers off, the remaining one
alone still prevents every duplicate in the kill and network scenarios; with all three off,
the same scenarios do refund twice (so the suite can see a duplicate, and each layer matters).

The Prefect cache layer exists only in flows, so its scenarios run `process_ticket`; the ledger
and gateway layers are exercised by core workers.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chaos.conftest import SEED, assert_clean
from tests.chaos.harness import Tally, Workers, World, kill_scenario, network_scenario

Worlds = Callable[..., World]
ALONE = {  # the remaining layer -> (the layers switched off, the worker kind it lives in)
    "cache": ("ledger,gateway_idempotency", "flow"),
    "ledger": ("cache,gateway_idempotency", "core"),
    "gateway_idempotency": ("cache,ledger", "core"),
}


def _alone(new_world: Worlds, workers: Workers, layer: str, *, tickets: int,
           faults: list[str], positions: tuple[str, ...]) -> Tally:
    off, kind = ALONE[layer]
    world = new_world(layer)
    tally = kill_scenario(world, workers, tickets=tickets, kind=kind, seed=SEED + 7,
                          layers_off=off)
    tally.add(network_scenario(world, workers, kind=kind, faults=faults, layers_off=off,
                               positions=positions))
    return tally


@pytest.mark.parametrize("layer", list(ALONE))
def test_one_layer_alone_prevents_every_duplicate(
        layer: str, new_world: Worlds, workers: Workers, tally: Tally) -> None:
    tally.add(_alone(new_world, workers, layer, tickets=2, faults=["drop"],
                     positions=("second",)))
    assert_clean(tally)
    assert tally.kills >= 2, tally.line()


@pytest.mark.chaos
@pytest.mark.parametrize("layer", list(ALONE))
def test_full_one_layer_alone_run(layer: str, new_world: Worlds, workers: Workers,
                                  tally: Tally) -> None:
    tally.add(_alone(new_world, workers, layer, tickets=25,
                     faults=["error", "reset", "drop", "timeout", "crash"],
                     positions=("first", "second", "retry")))
    assert_clean(tally)


@pytest.mark.parametrize("kind", ["core", pytest.param("flow", marks=pytest.mark.chaos)])
def test_with_every_layer_off_a_dropped_response_refunds_twice(
        kind: str, new_world: Worlds, workers: Workers) -> None:
    control = network_scenario(new_world("off"), workers, kind=kind, faults=["drop"],
                               layers_off="cache,ledger,gateway_idempotency",
                               positions=("first",))
    assert control.duplicates >= 1, control.line()
