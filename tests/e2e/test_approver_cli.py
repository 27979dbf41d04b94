"""Enrolled approvers on the command line: the first administrator bootstrapped, a script
enrolls a known secret from a file (never argv) with the administrator's code, and approves;
one approve command spends its code once, for every ticket it decides."""

from __future__ import annotations

import json
from pathlib import Path

import pyotp
import pytest

from billing_recon import pipeline, runtime
from billing_recon.config import Settings
from billing_recon.store import tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.sample_data import generate
from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # carol's, 160 bits, base32
ROOT = "KRSXG5CBOBYHE33WMVZEY2LLMVKE6VCQ"  # the administrator's


def _pending_tickets(cli: Cli, *emails: str) -> tuple[list[str], Settings]:
    """Tickets awaiting approval in the CLI's database, made in-process (no flow: faster)."""
    settings = Settings(database={"url": f"sqlite:///{cli.cwd}/billing_recon.db"},
                        home=cli.cwd / "home")
    runtime.reset()
    deps = runtime.build(settings)
    sample = generate(cli.cwd / "sample", seed=7)
    load_directory(deps.sessions, sample.data_dir)
    made = [pipeline.process_email(deps, (sample.inbox_dir / e).read_bytes(),
                                   str(sample.inbox_dir / e)) for e in emails]
    runtime.reset()
    assert [t.state for t in made] == ["APPROVAL_PENDING"] * len(emails)
    return [tickets.format_ticket_id(t.id) for t in made], settings


def _state(settings: Settings, ticket: str) -> str:
    deps = runtime.build(settings)
    try:
        return tickets.get(deps.sessions, tickets.parse_ticket_id(ticket)).state
    finally:
        runtime.reset()


def _file(cli: Cli, name: str, text: str) -> str:
    path = Path(cli.cwd) / name
    path.write_text(text)
    return str(path)


def _enroll_carol(cli: Cli) -> None:
    """Bootstrap the administrator, who enrolls carol with the secret a script knows."""
    boot = cli.run("approvers", "bootstrap-admin", "root", "--email", "root@ops.example",
                   "--totp-secret-file", _file(cli, "root.key", ROOT))
    assert boot.returncode == 0, boot.stderr
    added = cli.run("approvers", "add", "carol", "--email", "carol@finance.example",
                    "--totp-secret-file", _file(cli, "carol.key", SECRET), "--admin", "root",
                    "--code-file", _file(cli, "root.code", pyotp.TOTP(ROOT).now()))
    assert added.returncode == 0, added.stderr
    assert f"otpauth://totp/billing-recon:carol?secret={SECRET}" in added.stdout


def test_an_enrolled_approver_decides_with_a_code_and_a_wrong_code_changes_nothing(
        cli: Cli) -> None:
    [ticket], settings = _pending_tickets(cli, "05-tax-error.eml")
    _enroll_carol(cli)
    totp = pyotp.TOTP(SECRET)
    wrong = "000000" if totp.now() != "000000" else "111111"
    refused = cli.run("approve", ticket, "--by", "carol", "--code", wrong)
    assert refused.returncode == 1, refused.stdout
    assert "wrong or expired one-time code" in refused.stderr
    assert "Traceback" not in refused.stderr and wrong not in refused.stderr
    assert _state(settings, ticket) == "APPROVAL_PENDING"
    approved = cli.run("approve", ticket, "--by", "carol", "--code", totp.now())
    assert approved.returncode == 0, approved.stderr
    assert f"{ticket}: CLOSED(refunded)" in approved.stdout
    shown = cli.json("tickets", "show", ticket)
    assert [(d["approver"], d["channel"], d["code_verified"]) for d in shown["decisions"]] == [
        ("carol", "cli", True)]
    assert SECRET not in json.dumps(shown)


def test_code_rate_one_approve_command_spends_its_code_once_for_all_its_tickets(
        cli: Cli) -> None:
    [first, second, third], settings = _pending_tickets(
        cli, "05-tax-error.eml", "01-price-overcharge.eml", "03-duplicate-payment.eml")
    _enroll_carol(cli)
    code = pyotp.TOTP(SECRET).now()
    both = cli.run("approve", first, second, "--by", "carol", "--code", code)
    assert both.returncode == 0, both.stderr
    assert f"{first}: CLOSED(refunded)" in both.stdout
    assert f"{second}: CLOSED(refunded)" in both.stdout
    again = cli.run("approve", third, "--by", "carol", "--code", code)
    assert again.returncode == 1 and "this one-time code was already used" in again.stderr
    assert _state(settings, third) == "APPROVAL_PENDING"
