"""Races: the same invoices or the same email submitted many times at once, across two worker
processes running the real `process_ticket` flow; then two flows of the approved ticket at once.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from billing_recon.steps import approval_gate
from billing_recon.store import tickets
from billing_recon.store.models import Ticket
from tests.chaos.harness import Job, Tally, Workers, World, run_together, write_email
from tests.flows.conftest import _seed

BOTH = "Hello, INV-000001 and INV-000002 look wrong."
EXPECTED = {"ch_pay-1": 660, "ch_pay-3": 1800}  # see tests.flows.conftest._seed
Worlds = Callable[..., World]


def _ann(new_world: Worlds) -> World:
    world = new_world("race")
    _seed(world.deps)
    for charge, cents in [("ch_pay-1", 3960), ("ch_pay-2", 2000), ("ch_pay-3", 2000),
                          ("ch_pay-4", 550)]:
        world.gateway_store.ensure_charge(charge, cents, "usd")
    return world


def _env(world: World) -> dict[str, str]:
    # A lease far longer than a refund step: concurrent live runs must wait, not take over.
    return world.env(BILLING_RECON_REFUND_LEASE_S="60")


def _all_tickets(world: World) -> list[Ticket]:
    with world.deps.sessions() as s:
        return list(s.scalars(select(Ticket).order_by(Ticket.id)))


def _approve_and_refund_twice_at_once(world: World, workers: Workers, ticket_id: int,
                                      tally: Tally) -> None:
    """Bring the ticket to its decision, approve it, then run two flows of it at once."""
    if world.state(ticket_id) != "APPROVAL_PENDING":  # a raced run may have died mid-way
        workers.run(Job("flow", _env(world), ticket_id))
    ticket = tickets.get(world.deps.sessions, ticket_id)
    approval_gate.record_decision(world.deps, ticket_id, approval_gate.Decision(
        True, "alice", ticket.proposal_hash or "", "cli"), "cli:alice")
    tally.runs += 2
    run_together(workers, [Job("flow", _env(world), ticket_id) for _ in range(2)])
    assert world.state(ticket_id) == "CLOSED"
    for charge, cents in EXPECTED.items():
        made = world.gateway_store.list_refunds(charge)
        tally.expected += 1
        tally.executed += len(made)
        tally.duplicates += max(0, len(made) - 1)
        assert [r["amount"] for r in made] == [cents], made


def test_ten_emails_for_one_ticket_key_make_one_refunding_ticket_and_nine_duplicates(
        new_world: Worlds, workers: Workers, tally: Tally) -> None:
    world = _ann(new_world)
    paths = [write_email(world.root, f"m{i}", BOTH) for i in range(10)]
    tally.runs += 2
    run_together(workers, [Job("emails", _env(world), emails=paths[:5]),
                           Job("emails", _env(world), emails=paths[5:])])
    found = _all_tickets(world)
    assert len(found) == 10
    owners = [t for t in found if t.state != "DUPLICATE"]
    assert len(owners) == 1, [(t.id, t.state) for t in found]
    assert all(t.duplicate_of == owners[0].id for t in found if t is not owners[0])
    _approve_and_refund_twice_at_once(world, workers, owners[0].id, tally)
    tally.scenarios["race/ten-emails-one-key"] += 1


@pytest.mark.chaos
def test_one_email_submitted_ten_times_at_once_makes_one_ticket_and_one_refund(
        new_world: Worlds, workers: Workers, tally: Tally) -> None:
    world = _ann(new_world)
    path = write_email(world.root, "same", BOTH)
    tally.runs += 2
    run_together(workers, [Job("emails", _env(world), emails=[path] * 5) for _ in range(2)])
    found = _all_tickets(world)
    assert len(found) == 1, [(t.id, t.state) for t in found]
    _approve_and_refund_twice_at_once(world, workers, found[0].id, tally)
    tally.scenarios["race/same-email-ten-times"] += 1
