"""Approving in the Prefect UI with a one-time code (issue 8): a wrong code is refused, the
approver's current code pays.

Once an approver is enrolled, a decision counts only with the code their authenticator app
shows. One approver enrolled with a known secret, one ticket paused by a background
``billing-recon process --json``, one headless Chromium for the module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp
import pytest
from playwright.sync_api import Page, expect

from billing_recon.payments.gateway_store import GatewayStore
from billing_recon.store.sample_data import generate
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
from tests.e2e.paused import Background, BillingDb, final_state, paused_run, run_state

pytestmark = pytest.mark.e2e

SECRET = "KRSXG5CBOBYHE33WMVZEY2LLMVKE6VCQ"  # the test approver's authenticator secret (base32)
ADMIN_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # the administrator who enrolls them
APPROVER, APPROVER_EMAIL = "dora", "dora@finance.example"
EMAIL = "05-tax-error.eml"  # one refund, below the four-eyes threshold: one approval suffices
LOGS_S = 15.0  # Prefect ships run logs to the server in batches


@dataclass(frozen=True)
class Desk:
    """The CLI with an enrolled approver, the waiting process and the paused ticket."""

    cli: Cli
    waiting: Background
    billing: BillingDb
    ticket: str
    ticket_key: str


@pytest.fixture
def desk(cli: Cli) -> Iterator[Desk]:
    """Enroll the approver, then pause one ticket for approval in a background ``process``."""
    cli.env.update({"BILLING_RECON_DATABASE_URL": f"sqlite:///{cli.cwd / 'billing.db'}",
                    "BILLING_RECON_GATEWAY_DB": f"sqlite:///{cli.cwd / 'gateway.db'}"})
    sample = generate(cli.cwd / "sample", seed=7)
    (cli.cwd / "root.key").write_text(ADMIN_SECRET)
    (cli.cwd / "dora.key").write_text(SECRET)
    (cli.cwd / "root.code").write_text(pyotp.TOTP(ADMIN_SECRET).now())
    for args in (("load", str(sample.data_dir)),
                 ("approvers", "bootstrap-admin", "root", "--email", "root@ops.example",
                  "--totp-secret-file", "root.key"),
                 ("approvers", "add", APPROVER, "--email", APPROVER_EMAIL, "--totp-secret-file",
                  "dora.key", "--admin", "root", "--code-file", "root.code")):
        done = cli.run(*args)
        assert done.returncode == 0, done.stderr
    email = str(sample.inbox_dir / EMAIL)
    waiting = Background(cli, [email])
    billing = BillingDb(cli.env["BILLING_RECON_DATABASE_URL"])
    try:
        first = waiting.first(email)
        assert first["state"] == "APPROVAL_PENDING", first
        yield Desk(cli, waiting, billing, str(first["ticket_id"]), str(first["ticket_key"]))
    finally:
        waiting.stop()
        billing.close()


@pytest.fixture
def page() -> Iterator[Page]:
    """A tab of the module's one headless Chromium."""
    with module_browser() as context:
        yield context.new_page()


def wrong_code(totp: pyotp.TOTP) -> str:
    """Another authenticator's current code: not the approver's anywhere in the skew window."""
    near = {totp.at(time.time() + 30 * step) for step in range(-3, 4)}
    while (code := pyotp.TOTP(pyotp.random_base32()).now()) in near:
        pass  # one chance in ~140,000
    return code


def refused_events(shown: dict[str, Any]) -> list[dict[str, Any]]:
    """Payloads of the ticket's ``approval_refused`` events, as ``tickets show --json`` has them."""
    return [e["payload"] for e in shown["events"] if e["kind"] == "approval_refused"]


def gateway_refunds(desk: Desk) -> list[dict[str, Any]]:
    """The refunds the payment gateway made for the ticket."""
    store = GatewayStore(desk.cli.env["BILLING_RECON_GATEWAY_DB"])
    try:
        return [r for r in store.list_refunds()
                if r["metadata"].get("ticket_key") == desk.ticket_key]
    finally:
        store.close()


def run_log(api_url: str, run_id: str, wanted: str) -> list[str]:
    """The run's log messages on the server, once one containing ``wanted`` has arrived."""
    deadline = time.monotonic() + LOGS_S
    while True:
        reply = httpx.post(f"{api_url}/logs/filter", timeout=10, json={
            "logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        reply.raise_for_status()
        messages = [str(log["message"]) for log in reply.json()]
        if any(wanted in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.5)


def decide(page: Page, api_url: str, run_id: str, answer: Answer, shot: str = "") -> None:
    """Answer the run's form in the UI, code included; ``shot``: screenshot the filled form."""
    dialog = open_resume_dialog(page, api_url, run_id)
    expect(field(dialog, "Code")).to_be_visible()  # the form asks for the one-time code
    fill_form(dialog, answer)
    expect(field(dialog, "Code")).to_have_value(answer.code or "")
    if shot:
        page.screenshot(path=str(artifact(shot)))
    submit(dialog)


def test_a_wrong_code_in_the_ui_is_refused_and_the_approvers_current_code_refunds_once(
        desk: Desk, page: Page, prefect_api: str) -> None:
    ticket, totp = desk.ticket, pyotp.TOTP(SECRET)
    run_id = paused_run(desk.billing, prefect_api, ticket)
    pauses, wrong = len(desk.billing.waits(ticket)), wrong_code(totp)
    decide(page, prefect_api, run_id, Answer(approve=True, approver=APPROVER, code=wrong))
    # Refused: the same run goes back to Paused with a new form; it does not fail.
    assert paused_run(desk.billing, prefect_api, ticket, pauses_before=pauses) == run_id
    assert run_state(prefect_api, run_id) == "PAUSED" and desk.waiting.proc.poll() is None
    assert desk.waiting.of(ticket) == [("APPROVAL_PENDING", None)]
    shown = desk.cli.json("tickets", "show", ticket)
    assert shown["state"] == "APPROVAL_PENDING" and shown["decisions"] == []
    refused = refused_events(shown)
    assert [(p["approver"], p["channel"], p["approve"]) for p in refused] == [
        (APPROVER, "ui", True)]
    assert "wrong or expired one-time code" in refused[0]["error"]
    assert "code" not in refused[0] and wrong not in json.dumps(refused)
    assert desk.billing.refunds(ticket) == [] and gateway_refunds(desk) == []

    code = totp.now()
    decide(page, prefect_api, run_id, Answer(approve=True, approver=APPROVER,
                                             note="code from my app", code=code),
           shot="ui-approval-form-code.png")
    assert desk.waiting.settled(ticket)["state"] == "CLOSED"
    assert desk.waiting.of(ticket) == [("APPROVAL_PENDING", None), ("CLOSED", "refunded")]
    shown = desk.cli.json("tickets", "show", ticket)
    assert [e["to"] for e in shown["events"] if e["kind"] == "transition"][-3:] == [
        "APPROVED", "REFUNDED", "CLOSED"]
    assert [(d["decision"], d["approver"], d["channel"], d["code_verified"])
            for d in shown["decisions"]] == [("approve", APPROVER, "ui", True)]
    assert len(refused_events(shown)) == 1 and SECRET not in json.dumps(shown)
    assert len(desk.billing.refunds(ticket)) == 1 and len(gateway_refunds(desk)) == 1
    assert final_state(prefect_api, run_id) == "COMPLETED"
    logged = run_log(prefect_api, run_id, "decision refused")
    assert any("wrong or expired one-time code" in m for m in logged), logged
    assert not [m for m in logged if wrong in m or code in m]
