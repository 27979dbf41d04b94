"""The whole sample inbox through reconcile-inbox equals the generator's ground truth."""

from __future__ import annotations

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
