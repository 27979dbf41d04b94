"""process-ticket and sync-refunds with refunds that do not succeed at once: the embedded
local gateway starts them pending and sends its events to the embedded webhook receiver."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from billing_recon.domain.fsm import Reason, State
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_flows.sync_refunds import sync_refunds
from tests.flows.conftest import decide_in_ui, email, wait_for_state

pytestmark = [pytest.mark.flows, pytest.mark.anyio]
OVERCHARGED = "Hello, INV-000001 looks wrong: I was overcharged."
Lifecycle = Callable[..., None]


@pytest.fixture
def lifecycle(monkeypatch: pytest.MonkeyPatch) -> Lifecycle:
    """Sets the embedded gateway's lifecycle (before the flow first starts it)."""
    def set_(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"BILLING_RECON_GATEWAY_{name.upper()}", value)
    return set_


async def _approved_run(deps: Deps, tmp_path: Path) -> tuple[int, dict[str, object]]:
    path = email(tmp_path, "r1", "ann@example.com", OVERCHARGED)
    run = asyncio.create_task(process_ticket(email_path=path, approval_wait_s=60))
    while (found := tickets.find_by_email(deps.sessions, "r1@test")) is None:
        await asyncio.sleep(0.1)
    ticket = await wait_for_state(deps, found.id, "APPROVAL_PENDING")
    await decide_in_ui(ticket, approve=True)
    return ticket.id, await run


async def test_pending_refund_ends_the_run_refunded_and_its_webhook_closes_the_ticket(
        lifecycle: Lifecycle, world: Deps, tmp_path: Path) -> None:
    lifecycle(pending_share="1", settle_s="1")
    ticket_id, result = await _approved_run(world, tmp_path)
    assert result["state"] == State.REFUNDED.value  # the run does not wait for the bank
    assert tickets.get(world.sessions, ticket_id).reply is None
    done = await wait_for_state(world, ticket_id, State.CLOSED.value)
    assert done.reason == Reason.REFUNDED.value and done.reply
    assert [e.actor for e in tickets.events(world.sessions, ticket_id, "refund_status")] == [
        "webhook"]


async def test_refund_failed_at_the_gateway_escalates_the_ticket(
        lifecycle: Lifecycle, world: Deps, tmp_path: Path) -> None:
    lifecycle(pending_share="1", failure_share="1", settle_s="1")
    ticket_id, _result = await _approved_run(world, tmp_path)
    done = await wait_for_state(world, ticket_id, State.ESCALATED.value)
    assert done.reason == Reason.REFUND_FAILED.value and done.reply is None


async def test_sync_refunds_flow_settles_a_pending_refund_whose_webhooks_were_lost(
        lifecycle: Lifecycle, world: Deps, tmp_path: Path) -> None:
    lifecycle(pending_share="1", settle_s="0.3", webhook_loss_share="1")
    ticket_id, result = await _approved_run(world, tmp_path)
    assert result["state"] == State.REFUNDED.value
    await asyncio.sleep(1.0)
    assert tickets.get(world.sessions, ticket_id).state == State.REFUNDED.value  # no event
    report = await sync_refunds()
    assert report["tickets"] == {tickets.format_ticket_id(ticket_id): "CLOSED(refunded)"}
