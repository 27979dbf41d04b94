"""What the approver sees beside the form: the evidence as table artifacts, linked from it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.exceptions import PrefectHTTPStatusError

from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.models import Ticket
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_tasks.approval import ARTIFACT_PAGE
from tests.flows.conftest import decide_in_ui, email, wait_for_state, wait_paused

pytestmark = [pytest.mark.flows, pytest.mark.anyio]


async def _pending(world: Deps, tmp_path: Path, name: str, body: str
                   ) -> tuple[asyncio.Task[dict[str, Any]], Ticket]:
    """Start the ticket's flow and wait until its run is paused for a decision."""
    path = email(tmp_path, name, "ann@example.com", body)
    run = asyncio.create_task(process_ticket(email_path=path, approval_wait_s=60))
    while (ticket := tickets.find_by_email(world.sessions, f"{name}@test")) is None:
        await asyncio.sleep(0.1)
    ticket = await wait_for_state(world, ticket.id, "APPROVAL_PENDING")
    await wait_paused(ticket.flow_run_id)
    return run, ticket


async def test_paused_ticket_publishes_linked_invoice_and_reconciliation_tables(
        world: Deps, tmp_path: Path) -> None:
    run, ticket = await _pending(world, tmp_path, "ev1", "INV-000001 and INV-000002 look wrong")
    async with get_client() as client:
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(ticket.flow_run_id)])))
    by_key = {a.key: a for a in artifacts}
    invoices = by_key[f"ticket-{ticket.id}-invoices"].data
    recon = by_key[f"ticket-{ticket.id}-reconciliation"].data
    assert [(r["invoice"], r["total"]) for r in _rows(invoices)] == [
        ("INV-000001", "39.60"), ("INV-000002", "20.00")]
    assert "PAY-2 20.00, PAY-3 20.00" in _rows(invoices)[1]["payments"]
    assert [(r["invoice"], r["expected_total"], r["net_paid"], r["refundable"])
            for r in _rows(recon)] == [("INV-000001", "33.00", "39.60", "6.60"),
                                       ("INV-000002", "22.00", "40.00", "18.00")]
    summary = str(by_key[f"ticket-{ticket.id}-proposal"].data)
    for key in ("invoices", "reconciliation", "refunds"):
        assert f"({ARTIFACT_PAGE}{by_key[f'ticket-{ticket.id}-{key}'].id})" in summary
    await decide_in_ui(ticket, approve=False, approver="bob")
    assert (await run)["state"] == "REJECTED_BY_APPROVER"


def _rows(data: object) -> list[dict[str, str]]:
    import json

    rows = json.loads(data) if isinstance(data, str) else data
    assert isinstance(rows, list)
    return rows


async def test_a_consumed_form_is_deleted_from_prefect_so_its_code_cannot_be_read_back(
        world: Deps, tmp_path: Path) -> None:
    run, ticket = await _pending(world, tmp_path, "ev2", "INV-000002 was paid twice")
    await decide_in_ui(ticket, approve=False, approver="bob")
    assert (await run)["state"] == "REJECTED_BY_APPROVER"
    async with get_client() as client:
        with pytest.raises(PrefectHTTPStatusError, match="404"):
            await client.read_flow_run_input(
                UUID(ticket.flow_run_id), f"paused-approval-{ticket.id}-0-0-response")
        # the form's description and schema stay: only the submitted answer is removed
        await client.read_flow_run_input(
            UUID(ticket.flow_run_id), f"paused-approval-{ticket.id}-0-0-schema")
