"""The evaluation's scores, computed from hand-made ticket records (no pipeline, no database)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing_recon.evaluation.labels import Label
from billing_recon.evaluation.metrics import flat, gate, score, spread, unknown_metrics
from billing_recon.evaluation.records import TicketRecord, WouldRefund

_D = Decimal


def _label(name: str, state: str = "APPROVAL_PENDING", reason: str | None = None,
           refund: dict[str, Any] | None = None, **extra: Any) -> Label:
    return Label.model_validate({"email": name, "expected_state": state, "reason": reason,
                                 "refund": refund, **extra})


def _refund(amount: str, invoices: dict[str, str], reasons: list[str],
            currency: str = "USD") -> dict[str, Any]:
    return {"amount": amount, "currency": currency, "invoices": invoices, "reasons": reasons}


def _would(amount: str, invoices: dict[str, str], reasons: list[str],
           currency: str = "USD") -> WouldRefund:
    return WouldRefund(currency, _D(amount), {k: _D(v) for k, v in invoices.items()}, reasons)


RIGHT = TicketRecord(
    _label("a.eml", refund=_refund("10.00", {"INV-1": "10.00"}, ["price_overcharge"]),
           is_billing=True, invoice_ids=["INV-1"]),
    "APPROVAL_PENDING", is_billing=True, invoice_ids=["INV-1"],
    would_refund=[_would("10.00", {"INV-1": "10.00"}, ["price_overcharge"])],
    calls=3, prompt_tokens=900, completion_tokens=100, cost_usd=_D("0.002"),
    step_s={"triage_email": 0.5, "reconcile": 1.0})
# Proposes 12.00 where 10.00 is owed: 2.00 USD over-proposed.
OVER = TicketRecord(
    _label("b.eml", refund=_refund("10.00", {"INV-2": "10.00"}, ["tax_error"]),
           is_billing=True, invoice_ids=["INV-2"]),
    "APPROVAL_PENDING", is_billing=True, invoice_ids=["INV-2"],
    would_refund=[_would("12.00", {"INV-2": "12.00"}, ["tax_error"])],
    calls=3, prompt_tokens=1900, completion_tokens=100, cost_usd=_D("0.004"),
    step_s={"triage_email": 1.5})
# Triage missed INV-4 of two: only INV-3 proposed, 5.00 EUR under-proposed.
MISSED = TicketRecord(
    _label("c.eml", refund=_refund("8.00", {"INV-3": "3.00", "INV-4": "5.00"},
                                   ["price_overcharge"], "EUR"),
           is_billing=True, invoice_ids=["INV-3", "INV-4"]),
    "APPROVAL_PENDING", is_billing=True, invoice_ids=["INV-3"],
    would_refund=[_would("3.00", {"INV-3": "3.00"}, ["price_overcharge"], "EUR")],
    calls=3, prompt_tokens=1000, completion_tokens=0, cost_usd=None)
# Escalated by the cross-check: nothing proposed, the whole 7.00 USD under-proposed.
ESCALATED = TicketRecord(
    _label("d.eml", refund=_refund("7.00", {"INV-5": "7.00"}, ["duplicate_payment"]),
           is_billing=True, invoice_ids=["INV-5"]),
    "ESCALATED", reason="cross_check_mismatch", is_billing=True, invoice_ids=["INV-5"],
    calls=2, prompt_tokens=500, completion_tokens=0)
# Not about billing, but triage said billing and a refund came out of it: a false positive.
FALSE_REFUND = TicketRecord(
    _label("e.eml", "CLOSED", "not_billing", is_billing=False, invoice_ids=[]),
    "APPROVAL_PENDING", is_billing=True, invoice_ids=["INV-9"],
    would_refund=[_would("1.00", {"INV-9": "1.00"}, ["tax_error"])], calls=3)
RECORDS = [RIGHT, OVER, MISSED, ESCALATED, FALSE_REFUND]


def test_money_wrongly_proposed_is_summed_per_currency_over_and_under() -> None:
    money = score(RECORDS)["money"]
    assert money["over"] == {"EUR": "0.00", "USD": "3.00"}  # 2.00 (OVER) + 1.00 (FALSE_REFUND)
    assert money["under"] == {"EUR": "5.00", "USD": "7.00"}
    assert money["wrong"] == {"EUR": "5.00", "USD": "10.00"}
    assert money["tickets_wrong"] == 4


def test_an_over_and_an_under_proposal_on_two_invoices_do_not_cancel_out() -> None:
    swapped = TicketRecord(
        _label("f.eml", refund=_refund("10.00", {"INV-1": "4.00", "INV-2": "6.00"}, ["tax_error"])),
        "APPROVAL_PENDING",
        would_refund=[_would("10.00", {"INV-1": "6.00", "INV-2": "4.00"}, ["tax_error"])])
    money = score([swapped])["money"]
    assert (money["over"], money["under"]) == ({"USD": "2.00"}, {"USD": "2.00"})
    assert score([swapped])["outcomes"]["accuracy"] == 0.0


def test_refund_precision_recall_and_f1_per_reason_code() -> None:
    refunds = score(RECORDS)["refunds"]
    assert refunds["tax_error"] == {"tp": 1, "fp": 1, "fn": 0, "precision": 0.5,
                                         "recall": 1.0, "f1": 0.6667}
    assert refunds["duplicate_payment"]["fn"] == 1
    assert refunds["duplicate_payment"]["recall"] == 0.0
    assert refunds["price_overcharge"]["tp"] == 2
    assert refunds["credit_not_applied"]["precision"] is None  # never expected, never proposed
    assert refunds["any"] == {"tp": 3, "fp": 1, "fn": 1, "precision": 0.75,
                                   "recall": 0.75, "f1": 0.75}


def test_outcomes_count_state_reason_and_proposal() -> None:
    outcomes = score(RECORDS)["outcomes"]
    assert outcomes["accuracy"] == 0.2  # only RIGHT: OVER and MISSED have the state, not the money
    assert outcomes["by_expected"]["APPROVAL_PENDING"] == {"total": 4, "correct": 1,
                                                           "accuracy": 0.25}
    assert outcomes["errors"] == {"APPROVAL_PENDING -> APPROVAL_PENDING": 2,
                                  "APPROVAL_PENDING -> ESCALATED(cross_check_mismatch)": 1,
                                  "CLOSED(not_billing) -> APPROVAL_PENDING": 1}


def test_triage_scores_billing_intent_and_invoice_ids() -> None:
    triage = score(RECORDS)["triage"]
    assert triage["billing_accuracy"] == 0.8
    assert (triage["ids_missed"], triage["ids_extra"]) == (1, 1)
    assert triage["ids_exact"] == 0.6  # MISSED and FALSE_REFUND differ
    assert triage["ids_recall"] == 0.8  # 4 of the 5 expected ids
    assert triage["ids_precision"] == 0.8


def test_escalations_cost_and_steps() -> None:
    report = score(RECORDS)
    assert report["escalations"]["rate"] == 0.2
    assert report["escalations"]["by_reason"]["cross_check_mismatch"] == {"count": 1,
                                                                          "rate": 0.2}
    cost = report["cost"]
    assert cost["calls"] == {"mean": 2.8, "p95": 3, "max": 3}
    assert cost["tokens"]["max"] == 2000
    assert cost["unpriced_tickets"] == 1  # MISSED's model has no price
    assert cost["total_cost_usd"] == "0.006000"
    assert report["steps"]["triage_email"] == {"mean": 1.0, "p95": 1.5, "max": 1.5,
                                               "total": 2.0, "runs": 2}


def test_p95_is_the_nearest_rank() -> None:
    assert spread(range(1, 101)) == {"mean": 50.5, "p95": 95, "max": 100}
    assert spread([]) == {"mean": None, "p95": None, "max": None}


def test_gates_fail_under_floors_and_over_ceilings() -> None:
    report = score(RECORDS)
    assert flat(report)["wrong_money.USD"] == 10.0
    assert gate(report, {"refund_recall": 0.7}, {"wrong_money.USD": 10.0}) == []
    assert gate(report, {"refund_recall": 0.8}, {"over_money.USD": 2.5}) == [
        "refund_recall = 0.75 is under 0.8", "over_money.USD = 3.0 is over 2.5"]
    # A currency with no wrong money passes a money ceiling; an unknown metric fails its gate.
    assert gate(report, {}, {"wrong_money.GBP": 0}) == []
    assert gate(report, {"no_such_metric": 0}, {}) == ["no_such_metric = None is under 0"]


def test_every_gateable_number_has_a_known_name() -> None:
    names = set(flat(score(RECORDS)))
    assert unknown_metrics(names) == []
    assert {"refund_recall.tax_error", "over_money.EUR", "outcome_accuracy"} <= names
    assert unknown_metrics(["recal", "wrong_money.usd", "refund_f1.tax_eror"]) == [
        "recal", "wrong_money.usd", "refund_f1.tax_eror"]
