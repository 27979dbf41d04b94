"""Approving in the Prefect UI as operations staff do: headless Chromium on the run's page.

One background ``billing-recon process --json`` on the shared Prefect server pauses three tickets
for approval; each test decides one of them in the browser (the run page's Resume dialog) and
watches the ticket move.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import BrowserContext, Locator, Page, expect

from billing_recon.domain.money import to_minor_units
from billing_recon.payments.gateway_store import GatewayStore, idempotency_keys
from billing_recon.store.sample_data import SampleSet, generate
from tests.e2e.browser import (
    Answer,
    artifact,
    field,
    fill_form,
    module_browser,
    open_resume_dialog,
    submit,
)
from tests.e2e.conftest import Cli
from tests.e2e.paused import Background, BillingDb, final_state, paused_run

pytestmark = pytest.mark.e2e

APPROVE, REJECT, REFUSE = "05-tax-error.eml", "08-prior-refund.eml", "03-duplicate-payment.eml"


@dataclass(frozen=True)
class Desk:
    """The approver's situation: the CLI, its data, the waiting process, the tickets by email."""

    cli: Cli
    sample: SampleSet
    waiting: Background
    billing: BillingDb
    tickets: dict[str, dict[str, Any]]

    def ticket(self, email: str) -> str:
        """The ticket id of one of the waiting emails."""
        return str(self.tickets[email]["ticket_id"])


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Iterator[Desk]:
    """Three tickets paused for approval by one background ``process`` (one start-up for all)."""
    root = tmp_path_factory.mktemp("ui-approval")
    cli = Cli(root, prefect_api)
    cli.env.update({"BILLING_RECON_DATABASE_URL": f"sqlite:///{root / 'billing.db'}",
                    "BILLING_RECON_GATEWAY_DB": f"sqlite:///{root / 'gateway.db'}"})
    sample = generate(root / "sample", seed=7)
    loaded = cli.run("load", str(sample.data_dir))
    assert loaded.returncode == 0, loaded.stderr
    emails = [str(sample.inbox_dir / name) for name in (APPROVE, REJECT, REFUSE)]
    waiting, billing = Background(cli, emails), BillingDb(cli.env["BILLING_RECON_DATABASE_URL"])
    try:
        firsts = {Path(e).name: waiting.first(e) for e in emails}
        assert {x["state"] for x in firsts.values()} == {"APPROVAL_PENDING"}, firsts
        yield Desk(cli, sample, waiting, billing, firsts)
    finally:
        waiting.stop()
        billing.close()
        shutil.rmtree(root / "prefect", ignore_errors=True)


@pytest.fixture(scope="module")
def context() -> Iterator[BrowserContext]:
    """One headless Chromium and one browser context for the module (its cache is shared)."""
    with module_browser() as shared:
        yield shared


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A new tab per test."""
    tab = context.new_page()
    yield tab
    tab.close()


def gateway_calls(desk: Desk, ticket_key: str) -> tuple[list[dict[str, Any]], list[str]]:
    """What the payment gateway received for one ticket: refunds and idempotency keys."""
    store = GatewayStore(desk.cli.env["BILLING_RECON_GATEWAY_DB"])
    try:
        with store.engine.connect() as conn:
            keys = sorted(conn.scalars(sa.select(idempotency_keys.c.key)))
        refunds = store.list_refunds()
    finally:
        store.close()
    return ([r for r in refunds if r["metadata"].get("ticket_key") == ticket_key],
            [k for k in keys if k.startswith(f"{ticket_key}:")])


def assert_summary(dialog: Locator, amount: str, currency: str, proposal_hash: str) -> None:
    """The form's markdown shows the amount (as a heading) and the proposal hash (as code)."""
    heading = re.compile(rf"^{re.escape(amount)} {currency}\b")
    expect(dialog.get_by_role("heading", name=heading)).to_be_visible()
    expect(dialog.locator("code", has_text=proposal_hash)).to_be_visible()
    expect(field(dialog, "Proposal Hash")).to_have_value(proposal_hash)


def decide_in_ui(page: Page, api_url: str, run_id: str, answer: Answer) -> None:
    """Open the run's Resume dialog, fill the form and submit it."""
    dialog = open_resume_dialog(page, api_url, run_id)
    fill_form(dialog, answer)
    submit(dialog)


def transitions(shown: dict[str, Any]) -> list[str]:
    """The states the ticket went through, in order."""
    return [e["to"] for e in shown["events"] if e["kind"] == "transition"]


def ticket_refunds(desk: Desk, ticket: str) -> list[dict[str, Any]]:
    """The ledger's refunds of one ticket, as ``refunds --json`` lists them."""
    return [r for r in desk.cli.json("refunds") if r["ticket_id"] == ticket]


def test_approving_in_the_ui_refunds_the_ticket_exactly_once(
        desk: Desk, page: Page, prefect_api: str) -> None:
    ticket, truth = desk.ticket(APPROVE), desk.sample.ground_truth[APPROVE]
    run_id = paused_run(desk.billing, prefect_api, ticket)
    dialog = open_resume_dialog(page, prefect_api, run_id)
    assert_summary(dialog, truth["refund"]["amount"], truth["refund"]["currency"],
                   desk.billing.ticket(ticket).proposal_hash or "")
    fill_form(dialog, Answer(approve=True, approver="alice", note="checked in the UI"))
    page.screenshot(path=str(artifact("ui-approval-form.png")))
    submit(dialog)
    assert desk.waiting.settled(ticket)["state"] == "CLOSED"
    assert desk.waiting.of(ticket) == [("APPROVAL_PENDING", None), ("CLOSED", "refunded")]
    shown = desk.cli.json("tickets", "show", ticket)
    assert transitions(shown)[-3:] == ["APPROVED", "REFUNDED", "CLOSED"]
    assert [(d["decision"], d["approver"], d["channel"]) for d in shown["decisions"]] == [
        ("approve", "alice", "ui")]
    ours = ticket_refunds(desk, ticket)
    assert len(ours) == 1 and {r["payment_id"]: r["amount"] for r in ours} == truth["allocation"]
    refunds, keys = gateway_calls(desk, shown["ticket_key"])
    assert [(r["id"], r["metadata"]["payment_id"], r["amount"]) for r in refunds] == [
        (r["refund_id"], r["payment_id"], to_minor_units(Decimal(r["amount"]), r["currency"]))
        for r in ours]
    assert keys == [f"{shown['ticket_key']}:{r['payment_id']}" for r in ours]
    assert final_state(prefect_api, run_id) == "COMPLETED"


def test_rejecting_in_the_ui_closes_the_ticket_without_a_refund(
        desk: Desk, page: Page, prefect_api: str) -> None:
    ticket = desk.ticket(REJECT)
    run_id = paused_run(desk.billing, prefect_api, ticket)
    decide_in_ui(page, prefect_api, run_id,
                 Answer(approve=False, approver="bob", note="not convinced"))
    assert desk.waiting.settled(ticket)["state"] == "REJECTED_BY_APPROVER"
    assert [(r.decision, r.approver) for r in desk.billing.decisions(ticket)] == [("reject", "bob")]
    assert desk.billing.refunds(ticket) == []
    assert gateway_calls(desk, desk.tickets[REJECT]["ticket_key"]) == ([], [])
    assert final_state(prefect_api, run_id) == "COMPLETED"


def test_a_non_listed_approver_is_refused_and_the_run_waits_again(
        desk: Desk, page: Page, prefect_api: str) -> None:
    ticket = desk.ticket(REFUSE)
    run_id = paused_run(desk.billing, prefect_api, ticket)
    pauses = len(desk.billing.waits(ticket))
    decide_in_ui(page, prefect_api, run_id, Answer(approve=True, approver="mallory"))
    # The same run goes back to Paused (a new pause, a new form); it does not fail.
    assert paused_run(desk.billing, prefect_api, ticket, pauses_before=pauses) == run_id
    assert desk.waiting.proc.poll() is None
    assert desk.waiting.of(ticket) == [("APPROVAL_PENDING", None)]
    shown = desk.cli.json("tickets", "show", ticket)
    assert shown["state"] == "APPROVAL_PENDING" and shown["decisions"] == []
    refused = [e["payload"] for e in shown["events"] if e["kind"] == "approval_refused"]
    assert [(p["approver"], p["channel"]) for p in refused] == [("mallory", "ui")]
    assert "not an approver" in refused[0]["error"]
    decide_in_ui(page, prefect_api, run_id, Answer(approve=True, approver="bob"))
    assert desk.waiting.settled(ticket)["state"] == "CLOSED"
    assert desk.waiting.of(ticket) == [("APPROVAL_PENDING", None), ("CLOSED", "refunded")]
    assert [r.approver for r in desk.billing.decisions(ticket)] == ["bob"]
    assert len(desk.billing.refunds(ticket)) == 1
