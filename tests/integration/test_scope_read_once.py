"""A ticket's scope is read once: verification runs the trusted rules on the rows its analysis
read and sent to the sandbox, and the cross-check still judges the sandbox's answer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from billing_recon import runtime
from billing_recon.domain.fsm import State
from billing_recon.steps import reconciliation
from billing_recon.steps.deps import Deps
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.sample_data import generate
from tests.integration.ticket_support import fetched_ticket

ACTOR = "test"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The generated sample data (built once for the module)."""
    return generate(tmp_path_factory.mktemp("sample"), seed=7)


@pytest.fixture
def deps(sample: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deps]:
    """The sample data loaded into a fresh SQLite database."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", f"sqlite:///{tmp_path}/billing.db")
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BILLING_RECON_LLM", raising=False)
    runtime.reset()
    built = runtime.build()
    load_directory(built.sessions, sample.data_dir)
    yield built
    runtime.reset()


class _Reads:
    """Counts the statements that read invoice lines (every scope read issues one)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM invoice_lines" in statement:
            self.count += 1


def test_analysis_and_verification_of_a_ticket_read_its_scope_once(
        deps: Deps, sample: Any) -> None:
    ticket_id = fetched_ticket(deps, sample, ACTOR)
    reads = _Reads(deps.sessions.kw["bind"])
    summary = reconciliation.analysis_attempt(deps, ticket_id, ACTOR)
    ticket = reconciliation.verify_proposal(deps, ticket_id, summary, ACTOR)
    assert ticket.state == State.APPROVAL_PENDING.value
    assert reads.count == 1


def test_the_cross_check_still_rejects_a_sandbox_answer_the_trusted_rules_disagree_with(
        deps: Deps, sample: Any) -> None:
    ticket_id = fetched_ticket(deps, sample, ACTOR)
    analysis = reconciliation.analysis_attempt(deps, ticket_id, ACTOR)
    forged = replace(analysis, summary=analysis.summary.model_copy(update={"invoices": {
        i: row.model_copy(update={"refundable": "999999.00"})
        for i, row in analysis.summary.invoices.items()}}))
    ticket = reconciliation.verify_proposal(deps, ticket_id, forged, ACTOR)
    assert (ticket.state, ticket.reason) == (State.ESCALATED.value, "cross_check_mismatch")


def test_verification_without_a_kept_read_reads_the_scope_itself(
        deps: Deps, sample: Any) -> None:
    ticket_id = fetched_ticket(deps, sample, ACTOR)
    analysis = reconciliation.analysis_attempt(deps, ticket_id, ACTOR)
    reads = _Reads(deps.sessions.kw["bind"])  # as in another process, or after a restart:
    ticket = reconciliation.verify_proposal(deps, ticket_id, replace(analysis, rows=None), ACTOR)
    assert ticket.state == State.APPROVAL_PENDING.value
    assert reads.count == 1
