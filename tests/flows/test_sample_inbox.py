"""The whole sample inbox through reconcile-inbox equals the generator's ground truth."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_recon.ground_truth import matches
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon_flows.reconcile_inbox import reconcile_inbox
from tests.flows.conftest import sample_world

pytestmark = [pytest.mark.flows, pytest.mark.anyio]


@pytest.fixture
def sample(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[tuple[Deps, Path, dict]]:
    """The sample data loaded into a fresh database (SQLite and PostgreSQL), offline model."""
    monkeypatch.delenv("BILLING_RECON_LLM", raising=False)
    with sample_world(db_url, tmp_path, monkeypatch) as world:
        yield world


async def test_every_sample_email_ends_as_its_ground_truth_says(
        sample: tuple[Deps, Path, dict]) -> None:
    deps, inbox, truth = sample
    results = await reconcile_inbox(inbox=str(inbox), approval_wait_s=0)
    assert len(results) == len(truth) == tickets.count(deps.sessions)
    for path in sorted(inbox.glob("*.eml")):
        from billing_recon.domain.email import parse_email

        ticket = tickets.find_by_email(deps.sessions, parse_email(path.read_bytes()).email_id)
        assert ticket is not None
        assert matches(truth[path.name], ticket), (path.name, ticket.state, ticket.proposal)
        if truth[path.name]["refund"]:
            claimed = ticket.proposal["claimed"]
            assert claimed == truth[path.name]["claimed"], path.name
    kinds = {t["kind"] for t in truth.values()}
    assert {"duplicate", "not_billing", "unknown_sender", "no_discrepancy"} <= kinds


@pytest.mark.parametrize(  # the setting is for PostgreSQL (SQLite has one writer)
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_several_tickets_in_flight_end_as_the_ground_truth_says(
        sample: tuple[Deps, Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """BILLING_RECON_BATCH_IN_FLIGHT=4: tickets of different customers overlap in time, and
    the outcomes are those of one at a time (the duplicate among them included: a customer's
    tickets still run in arrival order)."""
    from sqlalchemy import func, select

    from billing_recon.domain.email import parse_email
    from billing_recon.store.models import TicketEvent

    deps, inbox, truth = sample
    monkeypatch.setenv("BILLING_RECON_BATCH_IN_FLIGHT", "4")  # read by each deps()
    results = await reconcile_inbox(inbox=str(inbox), approval_wait_s=0)
    assert len(results) == len(truth)
    for path in sorted(inbox.glob("*.eml")):
        ticket = tickets.find_by_email(deps.sessions, parse_email(path.read_bytes()).email_id)
        assert ticket is not None
        assert matches(truth[path.name], ticket), (path.name, ticket.state, ticket.proposal)
    with deps.sessions() as session:  # each ticket's work: its first step to its last one
        spans = sorted(session.execute(
            select(func.min(TicketEvent.at), func.max(TicketEvent.at))
            .where(TicketEvent.kind == "transition", TicketEvent.from_state.is_not(None))
            .group_by(TicketEvent.ticket_id)).tuples())
    overlaps = sum(1 for (_, end), (start, _) in itertools.pairwise(spans)
                   if start < end)
    assert overlaps > 0, spans
