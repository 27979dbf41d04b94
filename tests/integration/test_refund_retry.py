"""An operator's retry of a refund_failed ticket: re-opened, analysed and proposed again (the
failed refund's money is owed again), approved afresh (the first approval does not count),
refunded under a new key; no payment ever ends with two refunds that did not fail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_recon import pipeline, runtime
from billing_recon.domain.fsm import Reason, State
from billing_recon.domain.proposal import Proposal
from billing_recon.errors import InvalidApprovalToken
from billing_recon.payments.gateway_store import GatewayStore
from billing_recon.steps import approval_gate, refund_status, refund_sync, refund_worker
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.models import Ticket
from billing_recon.store.sample_data import generate

SETTLE = {"BILLING_RECON_GATEWAY_PENDING_SHARE": "1", "BILLING_RECON_GATEWAY_SETTLE_S": "0.2",
          "BILLING_RECON_GATEWAY_WEBHOOK_LOSS_SHARE": "1"}


@pytest.fixture
def sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """The sample data, an embedded gateway whose refunds fail once settled."""
    for name, value in {**SETTLE, "BILLING_RECON_GATEWAY_FAILURE_SHARE": "1",
                        "BILLING_RECON_DATABASE_URL": f"sqlite:///{tmp_path}/billing.db",
                        "BILLING_RECON_HOME": str(tmp_path / "home"),
                        "BILLING_RECON_GATEWAY_DB": f"sqlite:///{tmp_path}/gateway.db"}.items():
        monkeypatch.setenv(name, value)
    for name in ("BILLING_RECON_GATEWAY_URL", "BILLING_RECON_LLM", "BILLING_RECON_FOUR_EYES",
                 "BILLING_RECON_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()
    data = generate(tmp_path / "sample", seed=7)
    load_directory(runtime.build().sessions, data.data_dir)
    yield sorted(data.inbox_dir.glob("*.eml"))
    runtime.reset()


def _pending(deps: Deps, inbox: list[Path]) -> Ticket:
    for path in inbox:
        ticket = pipeline.process_email(deps, path.read_bytes(), str(path))
        if ticket.state == State.APPROVAL_PENDING.value:
            return ticket
    raise AssertionError("no sample email waits for approval")


def _approve_and_refund(deps: Deps, ticket: Ticket, approver: str) -> list[str]:
    approval_gate.record_decision(deps, ticket.id, approval_gate.Decision(
        True, approver, ticket.proposal_hash or "", "cli"), f"cli:{approver}")
    results = refund_worker.execute_refund(deps, ticket.id, "test")
    refund_worker.record_refunds(deps, ticket.id, results, "test")
    refund_status.settle_after_refund(deps, ticket.id, "test")
    time.sleep(0.5)  # the gateway settles them; their webhooks are lost: the sweep reads them
    refund_sync.sync_once(deps)
    return [r.idempotency_key for r in results]


def test_refund_failed_retry_needs_a_fresh_approval_and_a_new_key(
        sample: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    deps = runtime.build()
    first = _pending(deps, sample)
    keys = _approve_and_refund(deps, first, "alice")
    failed = tickets.get(deps.sessions, first.id)
    assert (failed.state, failed.reason) == (State.ESCALATED.value, Reason.REFUND_FAILED.value)
    monkeypatch.setenv("BILLING_RECON_GATEWAY_FAILURE_SHARE", "0")  # the card works again
    runtime.reset()
    deps = runtime.build()
    refund_status.reopen_for_retry(deps, first.id, "cli:operator", "customer updated card")
    again = pipeline.advance(deps, first.id)
    assert again.state == State.APPROVAL_PENDING.value
    old, new = (Proposal.model_validate(t.proposal) for t in (first, again))
    assert (new.retry, new.refunds[0].payments) == (1, old.refunds[0].payments)
    assert again.proposal_hash != first.proposal_hash
    assert approval_gate.approval_count(deps, again).approved_by == ()  # alice's was for the
    with pytest.raises(InvalidApprovalToken):  # first proposal, and its token is gone
        refund_worker.execute_refund(deps, first.id, "test")
    retried = _approve_and_refund(deps, again, "bob")
    assert retried == [f"{k}:retry1" for k in keys]
    done = tickets.get(deps.sessions, first.id)
    assert (done.state, done.reason) == (State.CLOSED.value, Reason.REFUNDED.value)
    store = GatewayStore(deps.settings.gateway.db_url)
    try:
        for pay in new.refunds[0].payments:
            made = store.list_refunds(pay.charge_ref)
            assert sorted(r["status"] for r in made) == ["failed", "succeeded"]
    finally:
        store.close()


def test_only_a_ticket_escalated_for_a_failed_refund_is_retried(sample: list[Path]) -> None:
    deps = runtime.build()
    pending = _pending(deps, sample)
    with pytest.raises(Exception, match="only a ticket escalated for a failed refund"):
        refund_status.reopen_for_retry(deps, pending.id, "cli:operator")
