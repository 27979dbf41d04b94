"""The whole sample inbox through reconcile-inbox equals the generator's ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    """BILLING_RECON_BATCH_IN_FLIGHT=4: several tickets are unsettled at once, never two of
    one mailbox, and the outcomes are those of one at a time (the duplicate among them
    included: a customer's tickets still run in arrival order)."""
    from billing_recon.domain.addresses import normalise_email
    from billing_recon.domain.email import parse_email
    from billing_recon_flows import reconcile_inbox as batch_module

    deps, inbox, truth = sample
    monkeypatch.setenv("BILLING_RECON_BATCH_IN_FLIGHT", "4")  # read by each deps()
    unsettled: set[int] = set()
    widest: list[int] = []

    async def watched(ticket_id: int, run: Any) -> None:  # from admission until it settles
        mailboxes = {normalise_email(tickets.get(deps.sessions, t).sender)
                     for t in (*unsettled, ticket_id)}
        assert len(mailboxes) == len(unsettled) + 1, "two tickets of one mailbox at once"
        unsettled.add(ticket_id)
        widest.append(len(unsettled))
        try:
            await settled(ticket_id, run)
        finally:
            unsettled.discard(ticket_id)

    settled = batch_module.settled
    monkeypatch.setattr(batch_module, "settled", watched)
    results = await reconcile_inbox(inbox=str(inbox), approval_wait_s=0)
    assert len(results) == len(truth)
    assert not any("error" in r for r in results), results
    for path in sorted(inbox.glob("*.eml")):
        ticket = tickets.find_by_email(deps.sessions, parse_email(path.read_bytes()).email_id)
        assert ticket is not None
        assert matches(truth[path.name], ticket), (path.name, ticket.state, ticket.proposal)
    assert 1 < max(widest) <= 4, widest


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
