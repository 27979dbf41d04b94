"""Refund truth in the ledger and the ticket: a ticket is CLOSED(refunded), with its reply, only
when every refund succeeded; a failed or canceled refund escalates it (at once or after it was
closed); statuses only move forward, and each change is in the ticket's event log.

The refunds are real (the refund worker against a gateway process); the later statuses are
what the gateway's API answers for them, given to ``refund_status.apply`` as the webhook
receiver and the sweep give them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from billing_recon import runtime
from billing_recon.domain.fsm import Reason, State
from billing_recon.domain.ticket_key import refund_idempotency_key
from billing_recon.payments.refunds import GatewayRefund
from billing_recon.steps import refund_status, refund_worker
from billing_recon.steps.deps import Deps
from billing_recon.store import commitments, ledger, tickets
from billing_recon.store.models import Payment, Refund
from tests.chaos.harness import Expected, World, direct_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Billing database, a gateway process and approved tickets."""
    with direct_world(tmp_path / "w") as made:
        yield made


@pytest.fixture
def deps(world: World, monkeypatch: pytest.MonkeyPatch) -> Deps:
    """Production deps (every layer on) pointed at the world's gateway."""
    for name, value in world.env().items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    return runtime.build()


def _refunded(deps: Deps, exp: Expected, first_status: str) -> list[GatewayRefund]:
    """Refund the approved ticket; the ledger records ``first_status`` as the gateway's first
    answer; the refunds as the gateway made them."""
    results = refund_worker.execute_refund(deps, exp.ticket_id, "test")
    refund_worker.record_refunds(deps, exp.ticket_id, [
        r.model_copy(update={"status": first_status}) for r in results], "test")
    client = deps.refund_client()
    try:
        return [client.retrieve_refund(r.gateway_refund_id) for r in results]
    finally:
        client.close()


def _rows(deps: Deps, ticket_id: int) -> list[Refund]:
    with deps.sessions() as session:
        return ledger.of_ticket(session, ticket_id)


def _status_events(deps: Deps, ticket_id: int) -> list[tuple[str, str]]:
    return [(e.payload["from"], e.payload["to"])
            for e in tickets.events(deps.sessions, ticket_id, refund_status.EVENT)]


def test_refund_status_succeeded_at_once_closes_the_ticket_with_its_reply(
        world: World, deps: Deps) -> None:
    exp = world.approved_ticket(2)
    results = refund_worker.execute_refund(deps, exp.ticket_id, "test")
    assert {r.status for r in results} == {"succeeded"}  # what the gateway answered
    refund_worker.record_refunds(deps, exp.ticket_id, results, "test")
    assert [r.status for r in _rows(deps, exp.ticket_id)] == ["succeeded", "succeeded"]
    done = refund_status.settle_after_refund(deps, exp.ticket_id, "test")
    assert (done.state, done.reason) == (State.CLOSED.value, Reason.REFUNDED.value)
    assert done.reply


def test_pending_refund_keeps_the_ticket_refunded_until_it_succeeds(
        world: World, deps: Deps) -> None:
    exp = world.approved_ticket(2)
    made = _refunded(deps, exp, "pending")
    waiting = refund_status.settle(deps, exp.ticket_id, "test")
    assert (waiting.state, waiting.reply) == (State.REFUNDED.value, None)
    refund_status.apply(deps, made[0], actor="webhook")  # one of two succeeded
    assert refund_status.settle(deps, exp.ticket_id, "test").state == State.REFUNDED.value
    refund_status.apply(deps, made[1], actor="webhook")
    done = refund_status.settle(deps, exp.ticket_id, "test")
    assert (done.state, done.reason) == (State.CLOSED.value, Reason.REFUNDED.value)
    assert _status_events(deps, exp.ticket_id) == [("pending", "succeeded")] * 2


def test_refund_failed_escalates_with_the_reason_and_the_payment_and_no_reply(
        world: World, deps: Deps) -> None:
    exp = world.approved_ticket(2)
    made = _refunded(deps, exp, "pending")
    refund_status.apply(deps, made[0], actor="webhook")
    failed = replace(made[1], status="failed", failure_reason="expired_or_canceled_card")
    assert refund_status.apply(deps, failed, actor="webhook") == refund_status.Applied(
        exp.ticket_id, changed=True)
    done = refund_status.settle(deps, exp.ticket_id, "test")
    assert (done.state, done.reason, done.reply) == (
        State.ESCALATED.value, Reason.REFUND_FAILED.value, None)
    last = tickets.events(deps.sessions, exp.ticket_id)[-1]
    [shown] = last.payload["failed"]
    row = next(r for r in _rows(deps, exp.ticket_id) if r.refund_id == made[1].gateway_refund_id)
    assert (shown["payment_id"], shown["failure_reason"]) == (
        row.payment_id, "expired_or_canceled_card")
    assert "expired_or_canceled_card" in last.payload["error"]
    assert row.failure_escalated_at is not None


def test_refund_failed_days_after_it_succeeded_takes_the_ticket_out_of_closed(
        world: World, deps: Deps) -> None:
    exp = world.approved_ticket(1)
    [made] = _refunded(deps, exp, "succeeded")
    assert refund_status.settle(deps, exp.ticket_id, "test").state == State.CLOSED.value
    refund_status.apply(deps, replace(made, status="failed", failure_reason="lost_or_stolen_card"),
                        actor="sweep")
    done = refund_status.settle(deps, exp.ticket_id, "test")
    assert (done.state, done.reason) == (State.ESCALATED.value, Reason.REFUND_FAILED.value)
    assert tickets.events(deps.sessions, exp.ticket_id)[-1].payload["customer_told_refunded"]
    # Escalated once: settling again (a duplicate event, the sweep) changes nothing.
    assert refund_status.settle(deps, exp.ticket_id, "test").version == done.version


def test_refund_status_never_moves_back_and_a_repeat_changes_nothing(
        world: World, deps: Deps) -> None:
    exp = world.approved_ticket(1)
    [made] = _refunded(deps, exp, "pending")
    failed = replace(made, status="failed", failure_reason="unknown")
    assert refund_status.apply(deps, failed, actor="webhook").changed  # type: ignore[union-attr]
    for stale in (replace(made, status="succeeded"), replace(made, status="pending"), failed):
        assert not refund_status.apply(deps, stale, actor="webhook").changed  # type: ignore[union-attr]
    [row] = _rows(deps, exp.ticket_id)
    assert (row.status, row.failure_reason) == ("failed", "unknown")
    assert _status_events(deps, exp.ticket_id) == [("pending", "failed")]


def test_a_status_for_a_refund_the_ledger_does_not_hold_changes_nothing(
        world: World, deps: Deps) -> None:
    stranger = GatewayRefund("re_not_ours", "ch_x", Decimal("1.00"), "usd",
                             "failed", failure_reason="unknown")
    assert refund_status.apply(deps, stranger, actor="webhook") is None


def test_refund_failed_money_is_owed_again_and_a_retry_gets_a_new_key(
        world: World, deps: Deps) -> None:
    """The ledger stops counting a failed refund (the rules see the payment unrefunded) and
    the next attempt on that payment sends another idempotency key than the failed one."""
    exp = world.approved_ticket(1)
    [made] = _refunded(deps, exp, "pending")
    with deps.sessions() as session:
        invoice = session.scalar(select(Payment.invoice_id).where(
            Payment.charge_ref == made.charge_ref))
        assert commitments.invoice_ledger(session, invoice or "").refunded == made.amount
    refund_status.apply(deps, replace(made, status="failed"), actor="webhook")
    [row] = _rows(deps, exp.ticket_id)
    with deps.sessions() as session:
        assert commitments.invoice_ledger(session, invoice or "").refunded == 0
        assert ledger.failed_attempts(session, exp.ticket_id, row.payment_id) == 1
    key = tickets.get(deps.sessions, exp.ticket_id).ticket_key or ""
    assert row.idempotency_key == refund_idempotency_key(key, row.payment_id)
    assert refund_idempotency_key(key, row.payment_id, 1) == f"{key}:{row.payment_id}:retry1"
    assert refund_worker.refund_attempt(deps, exp.ticket_id) == 1
