"""Overlapping scopes: one customer's emails naming overlapping invoice sets, raced across two
worker processes running the real `process_ticket` flow; then every proposal approved and its
flow run at the same moment. Money is owed once per invoice, whatever the ticket keys: the
summary's `over_refunded` (cents refunded beyond what the rules owed, over invoices) is 0.

Ann (tests.flows.conftest._seed) is owed 6.60 on INV-000001 (PAY-1) and 18.00 on INV-000002
(PAY-3, the newer of its two payments).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from sqlalchemy import select, update

from billing_recon.domain.proposal import Proposal
from billing_recon.steps import approval_gate, money_owed
from billing_recon.store import tickets
from billing_recon.store.models import Ticket
from tests.chaos.conftest import SEED
from tests.chaos.harness import (
    Job,
    Tally,
    Workers,
    World,
    over_refunded,
    run_together,
    write_email,
)
from tests.chaos.test_races import _ann, _env

OWED = {"INV-000001": 660, "INV-000002": 1800}
BODIES = ["Hello, INV-000001 looks wrong.", "Hello, INV-000002 looks wrong.",
          "Hello, INV-000001 and INV-000002 look wrong.", "Hello, my invoices look wrong.",
          "Following up on INV-000001: please refund the difference.",
          "Following up on INV-000002 and INV-000001: please check."]
Worlds = Callable[..., World]


def _in(world: World, state: str) -> list[Ticket]:
    with world.deps.sessions() as s:
        return list(s.scalars(select(Ticket).where(Ticket.state == state).order_by(Ticket.id)))


def _approve_all(world: World) -> list[int]:
    ids = []
    for ticket in _in(world, "APPROVAL_PENDING"):
        approval_gate.record_decision(world.deps, ticket.id, approval_gate.Decision(
            True, "alice", ticket.proposal_hash or "", "cli"), "cli:alice")
        ids.append(ticket.id)
    return ids


def _refund_at_once(world: World, workers: Workers, ids: list[int], tally: Tally) -> None:
    """Every approved ticket's flow, split over two processes started together."""
    halves = [ids[0::2], ids[1::2]]
    tally.runs += len(ids)
    run_together(workers, [Job("flows", _env(world), tickets=h) for h in halves if h])


CHARGE = {"INV-000001": "ch_pay-1", "INV-000002": "ch_pay-3"}  # where each refund must land


def _tally(world: World, tally: Tally, paid: int, owed: dict[str, int] = OWED) -> None:
    tally.expected += len(owed)
    tally.executed += paid
    tally.over_refunded += over_refunded(world, OWED)
    tally.lost += sum(1 for inv, cents in owed.items() if sum(
        r["amount"] for r in world.gateway_store.list_refunds(CHARGE[inv])) < cents)


def overlapping_emails(world: World, workers: Workers, tally: Tally, rng: random.Random) -> None:
    """Overlapping emails at once; every proposal approved; every flow at once."""
    bodies = rng.sample(BODIES, k=len(BODIES))
    paths = [write_email(world.root, f"o{i}", body) for i, body in enumerate(bodies)]
    tally.runs += 2
    run_together(workers, [Job("emails", _env(world), emails=paths[0::2]),
                           Job("emails", _env(world), emails=paths[1::2])])
    pending = [Proposal.model_validate(t.proposal) for t in _in(world, "APPROVAL_PENDING")]
    proposed = [inv for p in pending for r in p.refunds for inv in r.invoices]
    assert sorted(proposed) == sorted(OWED), proposed  # each overcharge proposed once
    _refund_at_once(world, workers, _approve_all(world), tally)
    closed = [t for t in _in(world, "CLOSED") if t.reason == "refunded"]
    _tally(world, tally, paid=sum(len(Proposal.model_validate(t.proposal).refunds[0].invoices)
                                  for t in closed))


def _forge(world: World, ticket: Ticket, like: Ticket) -> None:
    """Give ``ticket`` a sealed copy of ``like``'s proposal: two approvals on the same money,
    as only a bug or an edit with the signing key could make them."""
    proposal = Proposal.model_validate(like.proposal).model_copy(
        update={"ticket_key": ticket.ticket_key, "covered": []})
    with world.deps.sessions() as s, s.begin():
        s.execute(update(Ticket).where(Ticket.id == ticket.id).values(
            state="APPROVAL_PENDING", **money_owed.ticket_fields(world.settings, proposal)))


def forged_twins(world: World, workers: Workers, tally: Tally, rng: random.Random) -> None:
    """Two approved proposals holding the same money, paid at the same moment: the first to
    claim its call under the customer's lock pays, the other escalates naming it."""
    first, twin = (write_email(world.root, f"t{i}", b) for i, b in enumerate(BODIES[0:3:2]))
    tally.runs += 2
    workers.run(Job("emails", _env(world), emails=[first]))  # INV-000001: 6.60
    workers.run(Job("emails", _env(world), emails=[twin]))  # both: INV-000002's 18.00
    owner, copy = _in(world, "APPROVAL_PENDING")
    _forge(world, copy, owner)  # now both hold INV-000001's 6.60
    ids = _approve_all(world)
    _refund_at_once(world, workers, rng.sample(ids, k=len(ids)), tally)
    states = sorted(tickets.get(world.deps.sessions, t).state for t in ids)
    assert states == ["CLOSED", "ESCALATED"], states
    escalated = _in(world, "ESCALATED")[0]
    refusal = tickets.events(world.deps.sessions, escalated.id)[-1].payload
    paid = next(t for t in ids if t != escalated.id)
    assert refusal["other_tickets"] == [tickets.format_ticket_id(paid)], refusal
    _tally(world, tally, paid=1, owed={"INV-000001": OWED["INV-000001"]})


SCENARIOS = {"overlapping-emails": overlapping_emails, "forged-twins": forged_twins}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_overlapping_scopes_refund_each_overcharge_once(
        new_world: Worlds, workers: Workers, tally: Tally, name: str) -> None:
    SCENARIOS[name](_ann(new_world), workers, tally, random.Random(SEED))
    assert (tally.over_refunded, tally.duplicates, tally.lost) == (0, 0, 0), tally.line()
    tally.scenarios[f"overlap/{name}"] += 1


@pytest.mark.chaos
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_overlapping_scopes_hold_over_many_seeds(
        new_world: Worlds, workers: Workers, tally: Tally, name: str) -> None:
    for round_ in range(5):
        SCENARIOS[name](_ann(new_world), workers, tally, random.Random(SEED + round_))
        tally.scenarios[f"overlap/{name}"] += 1
    assert (tally.over_refunded, tally.duplicates, tally.lost) == (0, 0, 0), tally.line()
