"""The command line as people use it: process in one terminal, decide from another."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from billing_recon.store.sample_data import SampleSet
from tests.conftest import PG_URL
from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e


def _read_lines(proc: subprocess.Popen[str], count: int) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    return [json.loads(proc.stdout.readline()) for _ in range(count)]


def test_process_then_approve_and_reject_from_other_processes(cli: Cli,
                                                              sample: SampleSet) -> None:
    inbox = sample.inbox_dir
    emails = [str(inbox / n) for n in ("03-duplicate-payment.eml", "08-prior-refund.eml",
                                       "11-no-discrepancy.eml", "15-duplicate.eml")]
    proc = cli.start("process", *emails, "--json", "--wait", "120")
    try:
        first = {line["email"]: line for line in _read_lines(proc, 4)}
        assert [first[e]["state"] for e in emails] == ["APPROVAL_PENDING", "APPROVAL_PENDING",
                                                       "CLOSED", "DUPLICATE"]
        assert first[emails[0]]["refund"]["amount"] == "238.80"
        approved = cli.run("approve", first[emails[0]]["ticket_id"], "--by", "alice")
        assert approved.returncode == 0, approved.stderr
        rejected = cli.run("reject", first[emails[1]]["ticket_id"], "--by", "bob")
        assert rejected.returncode == 0, rejected.stderr
        later = {line["email"]: line for line in _read_lines(proc, 2)}
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert (later[emails[0]]["state"], later[emails[0]]["reason"]) == ("CLOSED", "refunded")
    assert later[emails[1]]["state"] == "REJECTED_BY_APPROVER"
    ours = [r for r in cli.json("refunds") if r["ticket_id"]]
    truth = sample.ground_truth["03-duplicate-payment.eml"]["allocation"]
    assert {r["payment_id"]: r["amount"] for r in ours} == truth
    key = first[emails[0]]["ticket_key"]
    assert all(r["idempotency_key"] == f"{key}:{r['payment_id']}" for r in ours)


def test_approval_without_a_waiting_process_executes_the_refund_once(
        cli: Cli, sample: SampleSet) -> None:
    email = str(sample.inbox_dir / "05-tax-error.eml")
    done = cli.run("process", email, "--json", "--wait", "0")
    assert done.returncode == 0, done.stderr
    ticket = json.loads(done.stdout.splitlines()[0])["ticket_id"]
    assert [a["ticket_id"] for a in cli.json("approvals")] == [ticket]
    assert cli.run("approve", ticket, "--by", "alice").returncode == 0
    again = cli.run("approve", ticket, "--by", "alice")
    assert again.returncode == 1 and "not awaiting a decision" in again.stderr
    assert len([r for r in cli.json("refunds") if r["ticket_id"] == ticket]) == 1
    shown = cli.json("tickets", "show", ticket)
    assert shown["state"] == "CLOSED" and shown["decisions"][0]["approver"] == "alice"
    assert [e["to"] for e in shown["events"] if e["kind"] == "transition"] == [
        "RECEIVED", "TRIAGED", "DATA_FETCHED", "ANALYZED", "APPROVAL_PENDING", "APPROVED",
        "REFUNDED", "CLOSED"]


def test_unknown_approver_is_refused_with_a_clear_message(cli: Cli, sample: SampleSet) -> None:
    done = cli.run("process", str(sample.inbox_dir / "05-tax-error.eml"), "--json",
                   "--wait", "0")
    ticket = json.loads(done.stdout.splitlines()[0])["ticket_id"]
    refused = cli.run("approve", ticket, "--by", "mallory")
    assert refused.returncode == 1 and "not an approver" in refused.stderr
    assert [r for r in cli.json("refunds") if r["ticket_id"]] == []


@pytest.mark.parametrize(("args", "message"), [
    (["process", "missing.eml"], "no such email file"),
    (["--db", "postgresql://nobody@127.0.0.1:1/none", "refunds"], "cannot reach the database"),
    # issue 14: each of these printed a traceback with exit code 1
    (["--db", "notaurl", "refunds"], "bad database URL <unparseable database URL>: Could not "
     "parse"),
    (["--db", "postgresql://u:s3cret@h:notaport/db", "refunds"], "bad database URL"),
    (["--db", "nosuch://h/db", "refunds"], "bad database URL nosuch://h/db: Can't load plugin"),
    (["--db", "mysql://u@127.0.0.1/db", "refunds"], "No module named 'MySQLdb'"),
    (["--db", f"{PG_URL}?bogus=1", "refunds"], 'invalid connection option "bogus"'),
    (["tickets", "show", "T-x"], "not a ticket id"),
    (["tickets", "show", "T-000999"], "no such ticket"),
    (["load", "nowhere"], "customers.csv"),
])
def test_bad_input_exits_2_with_the_reason_on_stderr(cli: Cli, args: list[str],
                                                     message: str) -> None:
    done = cli.run(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1 and "s3cret" not in done.stderr


def test_demo_proposals_equal_the_ground_truth(ephemeral_cli: Cli) -> None:
    """The README's first command, on the embedded defaults (no Prefect server running)."""
    done = ephemeral_cli.run("demo", "--wait", "0", timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "18/18 outcomes equal the ground truth; 12 tickets await a decision." in done.stdout
    assert "billing-recon approve T-000001 --by alice" in done.stdout
