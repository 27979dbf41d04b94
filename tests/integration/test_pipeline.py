"""The core pipeline called directly (no Prefect) settles every sample email as the truth says."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billing_recon import pipeline, runtime
from billing_recon.domain.fsm import State
from billing_recon.errors import ConcurrentTransition
from billing_recon.ground_truth import matches
from billing_recon.steps import intake, reconciliation
from billing_recon.steps.deps import Deps
from billing_recon.store import commitments, tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.models import Ticket, TicketKeyClaim
from billing_recon.store.sample_data import generate
from tests.sql_statements import commits, statements


@pytest.fixture
def sample_world(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[tuple[Deps, Path, dict[str, Any]]]:
    """The sample data loaded into a fresh database (SQLite and PostgreSQL)."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BILLING_RECON_LLM", raising=False)
    runtime.reset()
    sample = generate(tmp_path / "sample", seed=7)
    deps = runtime.build()
    load_directory(deps.sessions, sample.data_dir)
    yield deps, sample.inbox_dir, sample.ground_truth
    runtime.reset()


def test_every_sample_email_settles_as_its_ground_truth_says(
        sample_world: tuple[Deps, Path, dict[str, Any]]) -> None:
    deps, inbox, truth = sample_world
    for path in sorted(inbox.glob("*.eml")):
        ticket = pipeline.process_email(deps, path.read_bytes(), str(path))
        assert matches(truth[path.name], ticket), (path.name, ticket.state, ticket.reason)
        # what it returns is the committed ticket, though no step read it after its writes
        assert _columns(ticket) == _columns(tickets.get(deps.sessions, ticket.id))
    assert tickets.count(deps.sessions) == len(truth)


def _columns(ticket: Ticket) -> dict[str, Any]:
    return {c.key: getattr(ticket, c.key) for c in Ticket.__table__.columns}


#: A read of one ticket row by its id.
TICKET_READ = re.compile(r"FROM tickets\s+WHERE tickets\.id = ")


def test_each_step_starts_from_the_ticket_the_previous_one_committed(
        sample_world: tuple[Deps, Path, dict[str, Any]]) -> None:
    deps, inbox, truth = sample_world
    path = next(p for p in sorted(inbox.glob("*.eml"))
                if truth[p.name]["expected_state"] == "APPROVAL_PENDING")
    with statements(deps.sessions) as seen:
        ticket = pipeline.process_email(deps, path.read_bytes(), str(path))
    reads = sum(bool(TICKET_READ.search(sql)) for sql in seen)
    updates = sum(sql.startswith("UPDATE tickets") for sql in seen)
    assert ticket.state == "APPROVAL_PENDING"
    # the ticket's row is read only under the lock of writes to it (transitions, events)
    assert 0 < reads <= updates


def test_the_ticket_key_is_claimed_in_the_commit_that_moves_to_data_fetched(
        sample_world: tuple[Deps, Path, dict[str, Any]]) -> None:
    deps, inbox, truth = sample_world
    path = next(p for p in sorted(inbox.glob("*.eml"))
                if truth[p.name]["expected_state"] == "APPROVAL_PENDING")
    ticket = intake.open_ticket(deps, path.read_bytes(), str(path)).ticket
    ticket = pipeline.step(deps, ticket)
    with commits(deps.sessions) as committed:
        fetched = pipeline.step(deps, ticket)
    assert (fetched.state, len(committed)) == ("DATA_FETCHED", 1)
    with deps.sessions() as session:
        assert session.get(TicketKeyClaim, fetched.ticket_key).ticket_id == fetched.id


def test_a_proposed_refund_awaits_approval_in_the_commit_that_records_it(
        sample_world: tuple[Deps, Path, dict[str, Any]]) -> None:
    deps, inbox, truth = sample_world
    path = next(p for p in sorted(inbox.glob("*.eml"))
                if truth[p.name]["expected_state"] == "APPROVAL_PENDING")
    ticket = intake.open_ticket(deps, path.read_bytes(), str(path)).ticket
    while ticket.state != "DATA_FETCHED":
        ticket = pipeline.step(deps, ticket)
    analysis = reconciliation.analysis_attempt(deps, ticket.id, "test")
    # the first proposal of a process creates a table first: not the commit counted here
    commitments.prepare(deps.sessions.kw["bind"])
    with commits(deps.sessions) as committed:
        pending = reconciliation.verify_proposal(deps, ticket.id, analysis, "test")
    assert (pending.state, len(committed)) == ("APPROVAL_PENDING", 1)
    moves = tickets.events(deps.sessions, ticket.id, "transition")
    assert [e.to_state for e in moves][-2:] == ["ANALYZED", "APPROVAL_PENDING"]
    assert moves[-1].payload["proposal_hash"] == pending.proposal_hash is not None


def test_a_step_given_a_ticket_changed_since_moves_nothing(
        sample_world: tuple[Deps, Path, dict[str, Any]]) -> None:
    deps, inbox, _ = sample_world
    path = sorted(inbox.glob("*.eml"))[0]
    stale = intake.open_ticket(deps, path.read_bytes(), str(path)).ticket
    tickets.transition(deps.sessions, stale.id, State.TRIAGED, actor="someone else",
                       fields={"triage": {"invoice_ids": []}})
    with pytest.raises(ConcurrentTransition):
        pipeline.step(deps, stale)  # it still says RECEIVED: triage again
    assert [e.actor for e in tickets.events(deps.sessions, stale.id, "transition")] == [
        "open_ticket", "someone else"]


def test_an_email_seen_before_resumes_its_settled_ticket_without_new_work(
        sample_world: tuple[Deps, Path, dict[str, Any]]) -> None:
    deps, inbox, _ = sample_world
    path = sorted(inbox.glob("*.eml"))[0]
    first = pipeline.process_email(deps, path.read_bytes(), str(path))
    logged = len(tickets.events(deps.sessions, first.id))
    again = pipeline.process_email(deps, path.read_bytes(), str(path))
    assert (again.id, again.state) == (first.id, "APPROVAL_PENDING")
    assert len(tickets.events(deps.sessions, first.id)) == logged


def test_the_core_pipeline_does_not_import_prefect() -> None:
    code = "import sys, billing_recon.pipeline; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
