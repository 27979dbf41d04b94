"""process-ticket under prefect_test_harness: approval, rejection, duplicates, resumption."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import update

from billing_recon.domain.fsm import State
from billing_recon.steps import approval_gate
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.models import Refund, Ticket
from billing_recon_flows.process_ticket import process_ticket
from tests.flows.conftest import decide_in_ui, email, gateway_refunds, wait_for_state

pytestmark = [pytest.mark.flows, pytest.mark.anyio]
BOTH = "Hello, INV-000001 and INV-000002 look wrong: I was overcharged $24.60."


def _ledger(deps: Deps) -> list[Refund]:
    with deps.sessions() as s:
        return list(s.query(Refund).order_by(Refund.payment_id))


async def _run_until_pending(deps: Deps, path: str) -> tuple[asyncio.Task[dict], Ticket]:
    run = asyncio.create_task(process_ticket(email_path=path, approval_wait_s=60))
    while True:
        ticket = tickets.find_by_email(deps.sessions, Path(path).stem + "@test")
        if ticket is not None:
            return run, await wait_for_state(deps, ticket.id, "APPROVAL_PENDING")
        await asyncio.sleep(0.1)


async def test_approval_refunds_each_payment_exactly_once(world: Deps, tmp_path: Path) -> None:
    run, ticket = await _run_until_pending(world, email(tmp_path, "m1", "ann@example.com", BOTH))
    assert ticket.proposal["refunds"][0]["amount"] == "24.60"
    await decide_in_ui(ticket, approve=True)
    result = await run
    assert result["state"] == "CLOSED" and result["reason"] == "refunded"
    refunds = gateway_refunds(world)
    assert sorted((r["charge"], r["amount"]) for r in refunds) == [("ch_pay-1", 660),
                                                                    ("ch_pay-3", 1800)]
    assert [(r.payment_id, str(r.amount)) for r in _ledger(world)] == [("PAY-1", "6.60"),
                                                                      ("PAY-3", "18.00")]
    assert {r.idempotency_key for r in _ledger(world)} == {
        f"{ticket.ticket_key}:PAY-1", f"{ticket.ticket_key}:PAY-3"}


async def test_rejection_moves_no_money(world: Deps, tmp_path: Path) -> None:
    run, ticket = await _run_until_pending(world, email(tmp_path, "m1", "ann@example.com", BOTH))
    await decide_in_ui(ticket, approve=False, approver="bob")
    result = await run
    assert result["state"] == "REJECTED_BY_APPROVER"
    assert gateway_refunds(world) == [] and _ledger(world) == []


async def test_decision_by_a_non_approver_is_refused_and_the_run_keeps_waiting(
        world: Deps, tmp_path: Path) -> None:
    run, ticket = await _run_until_pending(world, email(tmp_path, "m1", "ann@example.com", BOTH))
    await decide_in_ui(ticket, approve=True, approver="mallory")
    for _ in range(100):
        if tickets.events(world.sessions, ticket.id, "approval_refused"):
            break
        await asyncio.sleep(0.1)
    again = await wait_for_state(world, ticket.id, "APPROVAL_PENDING")
    await asyncio.sleep(1.5)  # the run re-paused with a new key
    assert not run.done() and gateway_refunds(world) == []
    await decide_in_ui(tickets.get(world.sessions, again.id), approve=True, approver="alice")
    assert (await run)["state"] == "CLOSED"
    assert len(gateway_refunds(world)) == 2


async def test_stale_proposal_hash_is_refused(world: Deps, tmp_path: Path) -> None:
    run, ticket = await _run_until_pending(world, email(tmp_path, "m1", "ann@example.com", BOTH))
    await decide_in_ui(ticket, approve=True, proposal_hash="0" * 64)
    for _ in range(100):
        if tickets.events(world.sessions, ticket.id, "approval_refused"):
            break
        await asyncio.sleep(0.1)
    assert tickets.get(world.sessions, ticket.id).state == "APPROVAL_PENDING"
    await decide_in_ui(tickets.get(world.sessions, ticket.id), approve=False)
    assert (await run)["state"] == "REJECTED_BY_APPROVER"


async def test_second_email_with_same_key_is_duplicate_and_refunds_nothing(
        world: Deps, tmp_path: Path) -> None:
    run, ticket = await _run_until_pending(world, email(tmp_path, "m1", "ann@example.com", BOTH))
    other = email(tmp_path, "m2", "ANN@example.com", "Again about INV-000002, INV-000001!")
    second = await process_ticket(email_path=other, approval_wait_s=5)
    assert second["state"] == "DUPLICATE"
    dup = tickets.find_by_email(world.sessions, "m2@test")
    assert dup is not None and dup.duplicate_of == ticket.id
    await decide_in_ui(ticket, approve=True)
    await run
    assert len(gateway_refunds(world)) == 2


async def test_same_email_again_reports_its_ticket_and_opens_none(
        world: Deps, tmp_path: Path) -> None:
    path = email(tmp_path, "m1", "ann@example.com", BOTH)
    run, ticket = await _run_until_pending(world, path)
    await decide_in_ui(ticket, approve=True)
    await run
    again = await process_ticket(email_path=path, approval_wait_s=5)
    assert again == {"ticket_id": tickets.format_ticket_id(ticket.id), "state": "CLOSED",
                     "reason": "refunded"}
    assert tickets.count(world.sessions) == 1
    assert len(tickets.events(world.sessions, ticket.id, "refund_worker_started")) == 1
    assert len(gateway_refunds(world)) == 2


async def test_refund_step_is_cached_on_the_ticket_key(world: Deps, tmp_path: Path) -> None:
    """Even if the ticket's REFUNDED state were lost, the refund body does not run again."""
    run, ticket = await _run_until_pending(world, email(tmp_path, "m1", "ann@example.com", BOTH))
    await decide_in_ui(ticket, approve=True)
    await run
    with world.sessions() as s, s.begin():  # simulate a lost state write and a lost ledger
        s.query(Refund).delete()
        s.execute(update(Ticket).where(Ticket.id == ticket.id).values(state="APPROVED",
                                                                      reason=None))
    result = await process_ticket(ticket_id=ticket.id, approval_wait_s=5)
    assert result["state"] == "CLOSED"
    assert len(tickets.events(world.sessions, ticket.id, "refund_worker_started")) == 1
    assert len(gateway_refunds(world)) == 2
    assert len(_ledger(world)) == 2


async def test_decision_recorded_without_a_live_run_is_executed_on_resume(
        world: Deps, tmp_path: Path) -> None:
    path = email(tmp_path, "m1", "ann@example.com", BOTH)
    first = await process_ticket(email_path=path, approval_wait_s=0)
    assert first["state"] == "APPROVAL_PENDING"
    tid = tickets.parse_ticket_id(first["ticket_id"])
    ticket = tickets.get(world.sessions, tid)
    approval_gate.record_decision(world, tid, approval_gate.Decision(
        True, "alice", ticket.proposal_hash or "", "cli"), "cli:alice")
    assert (await process_ticket(ticket_id=tid, approval_wait_s=0))["state"] == "CLOSED"
    assert len(gateway_refunds(world)) == 2


async def test_tampered_proposal_after_approval_is_refused(world: Deps, tmp_path: Path) -> None:
    first = await process_ticket(email_path=email(tmp_path, "m1", "ann@example.com", BOTH),
                                 approval_wait_s=0)
    tid = tickets.parse_ticket_id(first["ticket_id"])
    ticket = tickets.get(world.sessions, tid)
    approval_gate.record_decision(world, tid, approval_gate.Decision(
        True, "alice", ticket.proposal_hash or "", "cli"), "cli:alice")
    proposal = dict(ticket.proposal or {})
    proposal["refunds"] = [{**proposal["refunds"][0], "amount": "999.00"}]
    with world.sessions() as s, s.begin():
        s.execute(update(Ticket).where(Ticket.id == tid).values(proposal=proposal))
    result = await process_ticket(ticket_id=tid, approval_wait_s=0)
    assert (result["state"], result["reason"]) == ("ESCALATED", "policy_violation")
    assert gateway_refunds(world) == [] and _ledger(world) == []
    assert tickets.events(world.sessions, tid, "refund_worker_started") == []


async def test_forged_token_is_refused(world: Deps, tmp_path: Path) -> None:
    first = await process_ticket(email_path=email(tmp_path, "m1", "ann@example.com", BOTH),
                                 approval_wait_s=0)
    tid = tickets.parse_ticket_id(first["ticket_id"])
    ticket = tickets.get(world.sessions, tid)
    approval_gate.record_decision(world, tid, approval_gate.Decision(
        True, "alice", ticket.proposal_hash or "", "cli"), "cli:alice")
    with world.sessions() as s, s.begin():
        s.execute(update(Ticket).where(Ticket.id == tid).values(approval_token="f" * 64))
    result = await process_ticket(ticket_id=tid, approval_wait_s=0)
    assert (result["state"], result["reason"]) == ("ESCALATED", "policy_violation")
    assert gateway_refunds(world) == []


@pytest.mark.parametrize(("sender", "body", "state", "reason"), [
    ("ann@example.com", "Where is my parcel?", "CLOSED", "not_billing"),
    ("eve@evil.test", "Refund INV-000001 please", "REJECTED", "unknown_sender"),
    ("ann@example.com", "Refund INV-000003 please", "REJECTED", "invoice_not_owned"),
    ("ann@example.com", "Refund INV-999999 please", "REJECTED", "invoice_not_found"),
    ("bob@example.com", "Is INV-000003 right?", "CLOSED", "no_discrepancy"),
])
async def test_closing_and_rejecting_paths(world: Deps, tmp_path: Path, sender: str, body: str,
                                           state: str, reason: str) -> None:
    result = await process_ticket(email_path=email(tmp_path, "m1", sender, body),
                                  approval_wait_s=0)
    assert (result["state"], result["reason"]) == (state, reason)
    tid = tickets.parse_ticket_id(result["ticket_id"])
    log = [e.to_state for e in tickets.events(world.sessions, tid) if e.kind == "transition"]
    assert log[0] == State.RECEIVED.value and log[-1] == state
    assert gateway_refunds(world) == []


def test_the_flow_runs_every_step_of_the_core_table() -> None:
    """The flow wraps each step of steps/machine.py as tasks; only DECIDE is its own."""
    from billing_recon.steps.machine import Step
    from billing_recon_flows.process_ticket import STEPS

    assert set(STEPS) == set(Step) - {Step.DECIDE}
