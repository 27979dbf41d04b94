"""Webhooks: async refund failures mixed with successes, events duplicated, reordered and lost,
the receiver SIGKILLed between receiving an event and recording it (and after); after the
sweep the ledger equals the gateway and no CLOSED ticket has a failed refund."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chaos.conftest import SEED, assert_clean
from tests.chaos.harness import Tally, Workers, World, in_parallel
from tests.chaos.webhook_chaos import LIFECYCLE, webhook_scenario

Worlds = Callable[..., World]


def _webhooks(new_world: Worlds, workers: Workers, *, worlds: int, tickets: int,
              seed: int) -> Tally:
    return in_parallel([new_world("hooks", lifecycle=LIFECYCLE) for _ in range(worlds)],
                       lambda world, i: webhook_scenario(world, workers, tickets=tickets,
                                                         seed=seed + i))


def _assert_truthful(tally: Tally) -> None:
    assert_clean(tally)
    assert (tally.ledger_mismatches, tally.closed_but_failed, tally.over_refunded) == (
        0, 0, 0), tally.line()


def test_webhook_chaos_ledger_matches_the_gateway_and_no_failed_refund_is_closed(
        new_world: Worlds, workers: Workers, tally: Tally) -> None:
    tally.add(_webhooks(new_world, workers, worlds=1, tickets=10, seed=SEED + 300))
    _assert_truthful(tally)
    assert tally.faults["refund_failed_after_close"] >= 1 and tally.kills >= 1, tally.line()


@pytest.mark.chaos
def test_full_webhook_chaos(new_world: Worlds, workers: Workers, tally: Tally) -> None:
    tally.add(_webhooks(new_world, workers, worlds=2, tickets=30, seed=SEED + 3000))
    _assert_truthful(tally)
    assert tally.kills >= 10 and tally.faults["webhook_lost"] >= 5, tally.line()
