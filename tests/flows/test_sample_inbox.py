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


@pytest.mark.parametrize(  # ticket ids above 256 (Prefect does not track smaller ints)
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_a_batch_holds_nothing_per_ticket_once_its_run_has_ended(
        sample: tuple[Deps, Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect links every task and subflow result a flow holds to the run that returned it,
    for the flow's whole run: a batch drops each ticket's links once its run is over, so a
    batch of 10,000 tickets does not keep 10,000 of them (issue 19, goal 5)."""
    from prefect.context import FlowRunContext
    from sqlalchemy import text

    from billing_recon_flows import reconcile_inbox as batch_module

    deps, inbox, _truth = sample
    with deps.sessions() as session, session.begin():
        session.execute(text("ALTER SEQUENCE tickets_id_seq RESTART WITH 1000"))
    held: list[int] = []

    def at_the_end() -> bool:  # called in the batch's run, after every ticket's run
        context = FlowRunContext.get()
        assert context is not None
        held.append(len(context.run_results))
        return False

    monkeypatch.setattr(batch_module, "mail_on", at_the_end)
    paths = [str(p) for p in sorted(inbox.glob("*.eml"))[:5]]
    results = await reconcile_inbox(email_paths=paths, approval_wait_s=0)
    assert [r["ticket_id"] for r in results] == [f"T-{n:06d}" for n in range(1000, 1005)]
    assert held == [0]
