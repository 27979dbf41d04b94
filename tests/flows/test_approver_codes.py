"""The paused flow and enrolled approvers (issue 8): codes checked by the flow, four-eyes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect.flow_runs import aresume_flow_run

from billing_recon import runtime
from billing_recon.domain import totp
from billing_recon.steps import approval_gate
from billing_recon.steps.deps import Deps
from billing_recon.store import approvers, tickets
from billing_recon.store.models import Ticket
from billing_recon_flows.process_ticket import process_ticket
from tests.flows.conftest import email, gateway_refunds, wait_for_state, wait_paused

pytestmark = [pytest.mark.flows, pytest.mark.anyio]
ONE = "Hello, INV-000001 looks wrong: the unit price is not what we agreed."  # 6.60 on PAY-1
TWICE = "Hello, INV-000002 was charged twice."  # 18.00 on PAY-3


def _enroll(deps: Deps, name: str) -> str:
    secret = totp.new_secret()
    approvers.add(deps.sessions, deps.settings.approver_key(), name=name,
                  email=f"{name}@finance.example", role="approver", secret=secret,
                  actor="test")
    return secret


async def _pending(deps: Deps, path: str) -> tuple[asyncio.Task[dict], Ticket]:
    run = asyncio.create_task(process_ticket(email_path=path, approval_wait_s=60))
    while (ticket := tickets.find_by_email(deps.sessions, Path(path).stem + "@test")) is None:
        await asyncio.sleep(0.1)
    return run, await wait_for_state(deps, ticket.id, "APPROVAL_PENDING")


async def _answer(deps: Deps, ticket: Ticket, approver: str, code: str, approve: bool,
                  event: str) -> None:
    """Fill the paused run's form as the UI (or the CLI after recording) does; wait until
    the flow logged ``event`` and asked again or moved on."""
    asked = len(tickets.events(deps.sessions, ticket.id, "awaiting_decision"))
    await wait_paused(ticket.flow_run_id or "")
    await aresume_flow_run(UUID(ticket.flow_run_id or ""), run_input={
        "approve": approve, "approver": approver, "code": code, "note": "",
        "proposal_hash": ticket.proposal_hash})
    for _ in range(300):
        judged = tickets.events(deps.sessions, ticket.id, event)
        waiting = len(tickets.events(deps.sessions, ticket.id, "awaiting_decision")) > asked
        if judged and (waiting or tickets.get(deps.sessions, ticket.id).state != (
                "APPROVAL_PENDING")):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the flow never logged {event}")


async def test_a_wrong_code_keeps_the_run_waiting_and_the_right_one_refunds_once(
        world: Deps, tmp_path: Path) -> None:
    secret = _enroll(world, "carol")
    run, ticket = await _pending(world, email(tmp_path, "m1", "ann@example.com", ONE))
    now = totp.code_at(secret, time.time())
    wrong = "000000" if now != "000000" else "111111"
    await _answer(world, ticket, "carol", wrong, True, "approval_refused")
    assert not run.done() and tickets.get(world.sessions, ticket.id).state == "APPROVAL_PENDING"
    await _answer(world, ticket, "carol", totp.code_at(secret, time.time()), True,
                  "refund_worker_started")
    result = await run
    assert (result["state"], result["reason"]) == ("CLOSED", "refunded")
    assert [(r["charge"], r["amount"]) for r in gateway_refunds(world)] == [("ch_pay-1", 660)]
    refused = tickets.events(world.sessions, ticket.id, "approval_refused")
    assert len(refused) == 1 and "wrong or expired" in refused[0].payload["error"]
    assert [(d.approver, d.channel, d.code_verified)
            for d in approval_gate.decisions(world, ticket.id)] == [("carol", "ui", True)]


async def test_four_eyes_takes_two_different_approvers_through_the_paused_run(
        world: Deps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_RECON_FOUR_EYES", "USD:5")  # for the deps built from now on
    carol, dan = _enroll(world, "carol"), _enroll(world, "dan")
    run, ticket = await _pending(world, email(tmp_path, "m1", "ann@example.com", ONE))
    code = totp.code_at(carol, time.time())
    # carol approves from the CLI, which records it and resumes the run with the same form:
    approval_gate.record_decision(runtime.build(), ticket.id, approval_gate.Decision(
        True, "carol", ticket.proposal_hash or "", "cli", code=code), "cli:carol")
    await _answer(world, ticket, "carol", code, True, "decision_received")
    assert not run.done() and gateway_refunds(world) == []
    assert tickets.get(world.sessions, ticket.id).state == "APPROVAL_PENDING"
    assert tickets.events(world.sessions, ticket.id, "approval_refused") == []  # a repeat
    await _answer(world, ticket, "dan", totp.code_at(dan, time.time()), True,
                  "refund_worker_started")
    assert (await run)["state"] == "CLOSED"
    assert len(gateway_refunds(world)) == 1
    assert [(d.approver, d.channel) for d in approval_gate.decisions(world, ticket.id)] == [
        ("carol", "cli"), ("dan", "ui")]


async def test_code_rate_the_paused_run_refuses_a_spent_code_and_counts_wrong_ones(
        world: Deps, tmp_path: Path) -> None:
    """The UI's path (the paused run's form) goes through the same code check as the CLI: a
    code that decided one ticket is refused on another, and a wrong one is audited."""
    secret = _enroll(world, "carol")
    run1, first = await _pending(world, email(tmp_path, "m1", "ann@example.com", ONE))
    run2, second = await _pending(world, email(tmp_path, "m2", "ann@example.com", TWICE))
    code = totp.code_at(secret, time.time())
    await _answer(world, first, "carol", code, True, "refund_worker_started")
    assert (await run1)["state"] == "CLOSED"
    await _answer(world, second, "carol", code, True, "approval_refused")
    refused = tickets.events(world.sessions, second.id, "approval_refused")
    assert "this one-time code was already used" in refused[-1].payload["error"]
    wrong = "000000" if code != "000000" else "111111"
    await _answer(world, second, "carol", wrong, True, "approval_refused")
    assert not run2.done() and approval_gate.decisions(world, second.id) == []
    audit = approvers.audit(world.sessions, "carol")
    assert [(a.action, a.actor, a.details) for a in audit[1:]] == [
        ("wrong_code", "prefect-ui", {"ticket": tickets.format_ticket_id(second.id)})]
    await _answer(world, second, "carol", totp.code_at(secret, time.time() + totp.STEP_S),
                  True, "refund_worker_started")
    assert (await run2)["state"] == "CLOSED"
