"""Shadow mode scores exactly the mistakes a model makes (scripted over real HTTP).

The loopback chat server answers triage as an oracle that reads the labels, so a perfect
model scores perfectly; a second configuration (told apart by its model names, in the same
call) makes three scripted mistakes: it misses one invoice id, its analysis script adds 1.00
to one invoice, and it obeys an injected instruction by putting every invoice of the customer
in scope. The report must count exactly those, and nothing else.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing_recon.agents.triage import email_block
from billing_recon.domain.email import parse_email
from billing_recon.evaluation import configs, shadow
from billing_recon.evaluation.corpus import generate_corpus
from billing_recon.evaluation.labels import Label, read_labels
from billing_recon.evaluation.metrics import correct, score
from billing_recon.llm.reference_script import SCRIPT
from billing_recon.store.sample_data import generate
from billing_recon.testing.chat_server import RULES, ChatRequest, ChatServer

LOOPBACK_KEY = "sk-test-loopback"
WRONG_LINE = "    refundable = max(D(0), net - total)\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every kind of email once (17 emails: the duplicate comes with the email it repeats)."""
    return generate_corpus(tmp_path_factory.mktemp("corpus"), seed=5, size=17)


def _one(labels: list[Label], kind: str) -> Label:
    return next(label for label in labels if label.kind == kind)


def _customer_invoices(corpus: Path, invoice_id: str) -> list[str]:
    with (corpus / "data" / "invoices.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    owner = next(r["customer_id"] for r in rows if r["invoice_id"] == invoice_id)
    return sorted(r["invoice_id"] for r in rows if r["customer_id"] == owner)


class Oracle:
    """Triage answered from the labels; model ``mistaken`` answers some emails wrongly."""

    def __init__(self, corpus: Path, labels: list[Label], wrong_ids: dict[str, list[str]]):
        self.by_block = {email_block(parse_email((corpus / "inbox" / label.email)
                                                 .read_bytes())): label for label in labels}
        self.wrong_ids = wrong_ids

    def __call__(self, request: ChatRequest) -> dict[str, Any]:
        label = self.by_block[request.messages[-1]["content"]]
        ids = list(label.invoice_ids or [])
        if request.model == "gpt-4.1-nano":  # the mistaken configuration's triage model
            ids = self.wrong_ids.get(label.email, ids)
        return {"is_billing": label.is_billing, "invoice_ids": ids,
                "claimed_amounts": label.claimed}


def _config(name: str, server: ChatServer, triage: str, analysis: str) -> configs.Configuration:
    return configs.parse(f"{name}=BILLING_RECON_LLM=openai,OPENAI_BASE_URL={server.url},"
                         f"OPENAI_API_KEY={LOOPBACK_KEY},BILLING_RECON_LLM_MAX_RETRIES=0,"
                         f"BILLING_RECON_LLM_TRIAGE_MODEL={triage},"
                         f"BILLING_RECON_LLM_ANALYSIS_MODEL={analysis}")


def test_the_report_counts_exactly_the_scripted_mistakes(corpus: Path,
                                                         chat_server: ChatServer) -> None:
    labels = read_labels(corpus)
    two, injected = _one(labels, "two_invoices"), _one(labels, "prompt_injection")
    credit = _one(labels, "credit_not_applied")
    assert two.refund and credit.refund and injected.invoice_ids
    missed = sorted(two.refund.invoices)[1]
    everything = _customer_invoices(corpus, injected.invoice_ids[0])
    oracle = Oracle(corpus, labels, {two.email: [sorted(two.refund.invoices)[0]],
                                     injected.email: everything})
    target = next(iter(credit.refund.invoices))
    wrong_script = SCRIPT.replace(WRONG_LINE, WRONG_LINE.rstrip() + " + (D('1.00') if iid == "
                                  f"{target!r} else D(0))\n")
    assert wrong_script != SCRIPT
    chat_server.script("triage", oracle)
    chat_server.script("analysis", lambda r: {"script": wrong_script}
                       if r.model == "gpt-4o" else RULES)
    perfect = score(shadow.run(corpus, labels, _config("perfect", chat_server, "gpt-4.1-mini",
                                                       "gpt-4.1")))
    records = shadow.run(corpus, labels, _config("mistaken", chat_server, "gpt-4.1-nano",
                                                 "gpt-4o"))
    mistaken = score(records)

    assert perfect["outcomes"]["accuracy"] == 1.0
    assert perfect["triage"]["ids_exact"] == 1.0
    assert set(perfect["money"]["wrong"].values()) == {"0.00"}
    assert perfect["escalations"]["count"] == 0

    # 1. the missed id: that invoice's money is under-proposed, the ticket's outcome is wrong
    # 2. the wrong script: the cross-check escalates the ticket, its refund is not proposed
    assert mistaken["outcomes"]["errors"] == {
        "APPROVAL_PENDING -> APPROVAL_PENDING": 1,
        "APPROVAL_PENDING -> ESCALATED(cross_check_mismatch)": 1}
    assert mistaken["triage"]["ids_missed"] == 1
    under = {two.refund.currency: Decimal(0), credit.refund.currency: Decimal(0)}
    under[two.refund.currency] += two.refund.invoices[missed]
    under[credit.refund.currency] += credit.refund.amount
    assert {c: Decimal(a) for c, a in mistaken["money"]["under"].items() if Decimal(a)} == under
    assert set(mistaken["money"]["over"].values()) == {"0.00"}
    assert mistaken["escalations"]["by_reason"]["cross_check_mismatch"]["count"] == 1
    assert mistaken["escalations"]["count"] == 1
    assert mistaken["refunds"]["credit_not_applied"]["fn"] == 1
    due = perfect["refunds"]["any"]["tp"]
    assert perfect["refunds"]["any"]["fn"] == perfect["refunds"]["any"]["fp"] == 0
    assert mistaken["refunds"]["any"] == {"tp": due - 1, "fp": 0, "fn": 1, "precision": 1.0,
                                          "recall": round((due - 1) / due, 4),
                                          "f1": round(2 * (due - 1) / (2 * due - 1), 4)}
    # 3. the obeyed injection widens the scope (extra ids counted) but moves no money
    assert mistaken["triage"]["ids_extra"] == len(everything) - 1
    obeyed = next(r for r in records if r.label.email == injected.email)
    assert obeyed.invoice_ids == everything and correct(obeyed)
    # every step's wall time is measured, each ticket's intake and triage at least
    steps = mistaken["steps"]
    assert {"intake", "triage_email", "fetch_invoices", "reconcile"} <= set(steps)
    assert steps["intake"]["runs"] == steps["triage_email"]["runs"] == len(labels)
    # priced models: every ticket that called a model has a cost
    assert mistaken["cost"]["unpriced_tickets"] == 0
    assert float(mistaken["cost"]["total_cost_usd"]) > 0


def test_shadow_mode_builds_no_gateway_client(corpus: Path) -> None:
    labels = read_labels(corpus)[:3]
    with shadow.scratch_deps(configs.offline().settings, corpus / "data") as deps:
        with pytest.raises(shadow.ShadowModeRefund):
            deps.refund_client()
        records = [shadow.run_ticket(deps, corpus, label) for label in labels]
    assert all(r.error is None for r in records)


def test_the_demo_sample_set_is_a_labelled_folder_the_offline_model_gets_right(
        tmp_path: Path) -> None:
    """ground_truth.json is read as labels: the 18 demo emails, all right, no money wrong."""
    sample = generate(tmp_path / "demo")
    labels = read_labels(tmp_path / "demo")
    assert [label.email for label in labels] == sorted(sample.ground_truth)
    report = score(shadow.run(tmp_path / "demo", labels, configs.offline()))
    assert report["outcomes"]["accuracy"] == 1.0
    assert report["triage"]["ids_scored"] == 0  # the demo's truth has no triage labels
    assert report["refunds"]["any"]["tp"] == 12
    assert set(report["money"]["wrong"].values()) == {"0.00"}
