"""Exactly once per money owed, through the command line as a finance team uses it.

The issue's reproduction: one customer (ap@acme-robotics.example) writes about INV-000037
(over-charged 3.56 USD on PAY-000037), follows up about it and INV-000001, and writes once more
naming no invoice (every invoice). Before, three tickets each proposed 3.56 and PAY-000037 was
refunded three times once all were approved.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from billing_recon.config import Settings
from billing_recon.domain.proposal import Proposal
from billing_recon.steps import money_owed
from billing_recon.store.db import make_engine
from billing_recon.store.models import Ticket
from billing_recon.store.sample_data import SampleSet, generate
from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e

SENDER = "Priya Natarajan <ap@acme-robotics.example>"
BODIES = [
    "Invoice INV-000037 charges our Pro seats at the list price, but our contract price "
    "started on 1 March. Please refund the difference.",
    "Following up: INV-000037 and INV-000001 both look overcharged to us. Please check the "
    "seat price and refund the difference.",
    "We think we were overcharged on our invoices this year. Please check them all and refund "
    "the difference.",
]


def _emails(folder: Path, bodies: list[str]) -> list[str]:
    folder.mkdir(exist_ok=True)
    paths = []
    for n, body in enumerate(bodies, start=1):
        path = folder / f"{n:02d}-acme.eml"
        path.write_text(f"From: {SENDER}\nTo: billing@recon.example\nSubject: Our invoices\n"
                        f"Message-ID: <acme-{n}-{uuid.uuid4().hex[:8]}@test>\n"
                        f"Date: Fri, 20 Mar 2026 09:3{n}:00 +0000\n\n{body}\n")
        paths.append(str(path))
    return paths


def _lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _refunded(cli: Cli, payment_id: str) -> list[str]:
    return [r["amount"] for r in cli.json("refunds")
            if r["payment_id"] == payment_id and r["ticket_id"]]


def test_three_overlapping_emails_refund_the_overcharge_once(cli: Cli,
                                                             sample: SampleSet) -> None:
    lines = _lines(cli.run("process", *_emails(cli.cwd / "mail", BODIES), "--json",
                           "--wait", "0"))
    states = [(line["state"], line["reason"]) for line in lines]
    assert states == [("APPROVAL_PENDING", None), ("DUPLICATE", "duplicate"),
                      ("DUPLICATE", "duplicate")]
    first = lines[0]["ticket_id"]
    shown = cli.run("tickets", "show", lines[1]["ticket_id"])
    assert f"INV-000037: 3.56 proposed in {first}, pending" in shown.stdout
    assert f"duplicate of {first}" in shown.stdout
    for pending in cli.json("approvals"):
        approved = cli.run("approve", pending["ticket_id"], "--by", "alice")
        assert approved.returncode == 0, approved.stderr
    assert _refunded(cli, "PAY-000037") == ["3.56"]


def _store(cli: Cli, ticket_id: str, proposal: Proposal, *, seal: bool) -> None:
    """Edit the stored proposal as an attacker with database access would; ``seal`` also
    recomputes the MAC with the signing key (an attacker who has the key, or a bug)."""
    engine = make_engine(f"sqlite:///{cli.cwd}/billing_recon.db")
    if seal:
        values = money_owed.ticket_fields(Settings(home=cli.cwd / "home"), proposal)
    else:
        values = {"proposal": proposal.model_dump(mode="json"), "proposal_hash": proposal.hash()}
    with engine.begin() as conn:
        conn.execute(sa.update(Ticket).where(Ticket.id == int(ticket_id[2:])).values(**values))
    engine.dispose()


def _inflated(cli: Cli, ticket_id: str, amount: str) -> Proposal:
    proposal = Proposal.model_validate(cli.json("tickets", "show", ticket_id)["proposal"])
    refund = proposal.refunds[0]
    pay = refund.payments[0].model_copy(update={"amount": Decimal(amount)})
    return proposal.model_copy(update={"refunds": [refund.model_copy(update={
        "amount": Decimal(amount), "invoices": {pay.invoice_id: Decimal(amount)},
        "payments": [pay]})]})


@pytest.mark.parametrize("seal", [False, True], ids=["sha-recomputed", "mac-recomputed"])
def test_a_tampered_proposal_is_never_paid_and_approve_says_so(cli: Cli, sample: SampleSet,
                                                               seal: bool) -> None:
    ticket = _lines(cli.run("process", _emails(cli.cwd / "mail", BODIES[:1])[0], "--json",
                            "--wait", "0"))[0]["ticket_id"]
    _store(cli, ticket, _inflated(cli, ticket, "59.40"), seal=seal)
    approved = cli.run("approve", ticket, "--by", "alice")
    assert approved.returncode == 1
    expected = "trusted rules owe 3.56" if seal else "does not match its MAC"
    assert expected in approved.stderr
    shown = cli.json("tickets", "show", ticket)
    assert (shown["state"], shown["reason"]) == ("ESCALATED", "policy_violation")
    assert _refunded(cli, "PAY-000037") == []


def test_four_eyes_stays_as_frozen_when_approved_from_a_shell_without_the_setting(
        cli: Cli, sample: SampleSet) -> None:
    strict = Cli(cli.cwd, cli.env.get("PREFECT_API_URL"))
    strict.env["BILLING_RECON_FOUR_EYES"] = "USD:1"
    ticket = _lines(strict.run("process", _emails(cli.cwd / "mail", BODIES[:1])[0], "--json",
                               "--wait", "0"))[0]["ticket_id"]
    assert "BILLING_RECON_FOUR_EYES" not in cli.env
    once = cli.run("approve", ticket, "--by", "alice")
    assert once.returncode == 0, once.stderr
    assert "approvals: 1 of 2" in once.stdout
    assert cli.json("tickets", "show", ticket)["approvals"]["required"] == 2
    assert _refunded(cli, "PAY-000037") == []
    twice = cli.run("approve", ticket, "--by", "bob")
    assert twice.returncode == 0, twice.stderr
    assert _refunded(cli, "PAY-000037") == ["3.56"]


@pytest.fixture
def pg_cli(cli: Cli, pg_url: str) -> Iterator[Cli]:
    """The CLI on a fresh PostgreSQL schema with the sample data loaded."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_url else "?"
    cli.env["BILLING_RECON_DATABASE_URL"] = f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    data = generate(cli.cwd / "sample", seed=7)
    assert cli.run("load", str(data.data_dir)).returncode == 0
    engine = make_engine(cli.env["BILLING_RECON_DATABASE_URL"])
    with engine.begin() as conn:  # INV-000001 over-paid by 1.00: the follow-up owes that too
        conn.execute(sa.text("UPDATE payments SET amount = amount + 1 "
                             "WHERE payment_id = 'PAY-000001'"))
    engine.dispose()
    yield cli
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _together(cli: Cli, commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    procs = [cli.start(*args) for args in commands]
    done = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return done


@pytest.mark.postgres
def test_overlapping_tickets_processed_and_approved_at_once_on_postgres(pg_cli: Cli) -> None:
    """Two processes open the two overlapping tickets at the same moment (either may come
    first), then for every pending ticket two approvers approve at the same moment: each
    overcharge is proposed once and refunded once."""
    emails = _emails(pg_cli.cwd / "mail", BODIES[:2])
    for done in _together(pg_cli, [["process", e, "--json", "--wait", "0"] for e in emails]):
        assert done.returncode == 0, done.stderr
    pending = pg_cli.json("approvals")
    invoices = [inv for a in pending for inv in Proposal.model_validate(
        pg_cli.json("tickets", "show", a["ticket_id"])["proposal"]).refunds[0].invoices]
    assert sorted(invoices) == ["INV-000001", "INV-000037"]  # no invoice in two proposals
    held = [line for a in pending for line in a["held_elsewhere"]]  # {37} first: the other
    assert len(held) == len(pending) - 1  # shows 37 held by it; {37, 01} first: one proposal
    assert all(line.startswith("INV-000037: 3.56 proposed in T-") for line in held)
    assert sum(Decimal(a["amount"]) for a in pending) == Decimal("4.56")
    decided = _together(pg_cli, [["approve", a["ticket_id"], "--by", name]
                                 for a in pending for name in ("alice", "bob")])
    assert all(d.returncode in (0, 1) for d in decided), [d.stderr for d in decided]
    assert _refunded(pg_cli, "PAY-000037") == ["3.56"]
    assert _refunded(pg_cli, "PAY-000001") == ["1.00"]
