"""reconcile-inbox beyond a folder: the inbox table, progress, overdue sweeps, escalation events."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)

from billing_recon.config import IntakeSettings
from billing_recon.domain.email import parse_email
from billing_recon.domain.fsm import State
from billing_recon.steps import intake
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.models import Ticket
from billing_recon.store.types import utcnow
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_flows.reconcile_inbox import reconcile_inbox
from billing_recon_tasks.events import ESCALATED
from tests.bad_mail import CORPUS, oversized_email
from tests.flows.conftest import email

pytestmark = [pytest.mark.flows, pytest.mark.anyio]


def _receive(deps: Deps, path: str) -> str:
    raw = Path(path).read_bytes()
    assert intake.receive_email(deps, raw, path)
    return parse_email(raw).email_id


async def _escalation_events(name: str, since: datetime, timeout: float = 20) -> list[Any]:
    """Escalation events of this ticket since the test began (persisted asynchronously).

    Every test's database numbers its tickets from T-000001 while the Prefect backend is
    shared by the session, hence the time window.
    """
    wanted = EventFilter(event=EventNameFilter(name=[ESCALATED]),
                         occurred=EventOccurredFilter(since=since),
                         resource=EventResourceFilter(id=[f"billing-recon.ticket.{name}"]))
    async with get_client() as client:
        for _ in range(int(timeout * 4)):
            page = await client.read_events(filter=wanted, limit=50)
            if page.events:
                return list(page.events)
            await asyncio.sleep(0.25)
    return []


async def test_stored_inbox_emails_become_tickets_in_arrival_order(
        world: Deps, tmp_path: Path) -> None:
    first = _receive(world, email(tmp_path, "t1", "ann@example.com", "INV-000001 overcharged"))
    second = _receive(world, email(tmp_path, "t2", "bob@example.com", "Hello there, lunch?"))
    results = await reconcile_inbox(from_table=True, approval_wait_s=0)
    opened = [tickets.find_by_email(world.sessions, e) for e in (first, second)]
    assert all(isinstance(t, Ticket) for t in opened)
    assert [t.id for t in opened if t] == sorted(t.id for t in opened if t)
    assert {r["ticket_id"]: r["state"] for r in results} == {
        tickets.format_ticket_id(opened[0].id): "APPROVAL_PENDING",  # type: ignore[union-attr]
        tickets.format_ticket_id(opened[1].id): "CLOSED"}  # type: ignore[union-attr]
    assert await reconcile_inbox(from_table=True, approval_wait_s=0) == []  # nothing new
    assert tickets.count(world.sessions) == 2


async def test_receiving_the_same_email_twice_stores_it_once(world: Deps, tmp_path: Path) -> None:
    path = email(tmp_path, "t3", "ann@example.com", "INV-000002 twice")
    raw = Path(path).read_bytes()
    assert intake.receive_email(world, raw, path) is True
    assert intake.receive_email(world, raw, path) is False
    assert len(intake.open_from_table(world)) == 1
    assert intake.open_from_table(world) == []


async def test_batch_reports_its_progress_as_a_progress_artifact(
        world: Deps, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    email(inbox, "p1", "bob@example.com", "Just saying hi")
    email(inbox, "p2", "ann@example.com", "Another hello, nothing about money")
    state = await reconcile_inbox(inbox=str(inbox), approval_wait_s=0, return_state=True)
    async with get_client() as client:
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 1
    assert float(progress[0].data) == 100.0  # type: ignore[arg-type]
    assert progress[0].description == "2/2 tickets started"


async def test_missing_inbox_folder_is_a_clear_error(world: Deps, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        await reconcile_inbox(inbox=str(tmp_path / "nope"), approval_wait_s=0)


async def test_a_batch_given_no_source_is_a_clear_error(world: Deps) -> None:
    with pytest.raises(ValueError, match="needs inbox, email_paths, from_table or mailbox"):
        await reconcile_inbox(approval_wait_s=0)


async def test_escalated_ticket_emits_one_event_with_the_ticket_as_resource(
        world: Deps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    since = datetime.now(UTC)
    monkeypatch.setenv("BILLING_RECON_APPROVAL_TIMEOUT", "0")  # due as soon as it is pending
    from billing_recon import runtime

    runtime.reset()
    result = await process_ticket(email_path=email(tmp_path, "e1", "ann@example.com",
                                                   "INV-000001 is too high"), approval_wait_s=5)
    assert (result["state"], result["reason"]) == ("ESCALATED", "approval_timeout")
    events = await _escalation_events(result["ticket_id"], since)
    assert len(events) == 1
    assert events[0].resource["billing-recon.reason"] == "approval_timeout"
    assert events[0].payload["ticket_id"] == result["ticket_id"]


async def test_next_batch_escalates_approvals_past_their_deadline(
        world: Deps, tmp_path: Path) -> None:
    since = datetime.now(UTC)
    result = await process_ticket(email_path=email(tmp_path, "o1", "ann@example.com",
                                                   "INV-000002 paid twice"), approval_wait_s=0)
    assert result["state"] == "APPROVAL_PENDING"
    ticket_id = tickets.parse_ticket_id(result["ticket_id"])
    with world.sessions() as session, session.begin():
        row = session.get(Ticket, ticket_id)
        assert row is not None
        row.approval_deadline = utcnow() - timedelta(seconds=1)
    assert await reconcile_inbox(from_table=True, approval_wait_s=0) == []
    ticket = tickets.get(world.sessions, ticket_id)
    assert (ticket.state, ticket.reason) == ("ESCALATED", "approval_timeout")
    assert len(await _escalation_events(result["ticket_id"], since)) == 1


async def test_bad_mail_received_for_a_batch_is_refused_and_the_rest_get_tickets(
        world: Deps, tmp_path: Path) -> None:
    """Before issue 14, storing the garbage (or the Latin-1 email) raised UnicodeEncodeError,
    and Bob's email, reusing Ann's Message-ID, was taken as already received."""
    raws = {name: (CORPUS / name).read_bytes() for name in
            ("latin1-headers.eml", "reused-message-id.eml", "binary-garbage.eml")}
    for name, raw in raws.items():
        assert intake.receive_email(world, raw, name)
    small = replace(world, settings=world.settings.model_copy(
        update={"intake": IntakeSettings(max_email_bytes=1024)}))
    too_large = Path(oversized_email(tmp_path, 2048)).read_bytes()
    assert intake.receive_email(small, too_large, "big.eml")  # refused at once, not stored
    assert not intake.receive_email(small, too_large, "big.eml")
    results = await reconcile_inbox(from_table=True, approval_wait_s=0)
    assert sorted((r["state"], r["reason"]) for r in results) == [
        ("APPROVAL_PENDING", None), ("CLOSED", "not_billing"), ("REJECTED", "unreadable_email")]
    every = tickets.in_state(world.sessions, *State)
    assert sorted((t.sender, t.state, t.reason) for t in every) == [
        ("", "REJECTED", "email_too_large"), ("", "REJECTED", "unreadable_email"),
        ("ann@example.com", "APPROVAL_PENDING", None),
        ("bob@example.com", "CLOSED", "not_billing")]


def test_the_progress_bar_is_updated_at_most_once_a_second_and_at_the_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from uuid import uuid4

    from billing_recon_tasks import progress as progress_module

    updates: list[tuple[float, str]] = []
    clock = iter([10.0, 10.2, 10.4, 11.3, 11.5, 11.6])  # monotonic time of each advance

    async def update(_artifact_id: Any, percent: float, description: str) -> None:
        updates.append((percent, description))

    monkeypatch.setattr(progress_module, "aupdate_progress_artifact", update)
    monkeypatch.setattr(progress_module, "monotonic", lambda: next(clock))
    bar = progress_module.Progress(total=6, what="tickets started", artifact_id=uuid4())

    async def six() -> None:
        for _ in range(6):
            await bar.advance()

    asyncio.run(six())
    assert [d for _, d in updates] == ["1/6 tickets started", "4/6 tickets started",
                                       "6/6 tickets started"]
    assert updates[-1][0] == 100.0
