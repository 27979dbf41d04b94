"""The scores of one configuration: a pure function of its ticket records (docs/evaluation.md).

Everything a finance lead asks before a model touches money: did triage read the email right,
did each ticket end where it should, which refunds were right per reason code, how much money
was proposed wrongly (too much and too little, per currency, per invoice), how often tickets
escalate, and what a ticket costs in calls, tokens, dollars and seconds.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from billing_recon.domain.fsm import ESCALATION_REASONS, State
from billing_recon.domain.rules import REASONS
from billing_recon.evaluation.records import TicketRecord

_ZERO = Decimal("0.00")
#: The variety fields broken down in the report (from the labels' ``variety``).
BREAKDOWNS = ("language", "id_style", "amount_style", "wrapper", "typos")


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def outcome_name(state: str, reason: str | None) -> str:
    """``CLOSED(no_discrepancy)``, or the bare state when it has no reason."""
    return f"{state}({reason})" if reason else state


def _refund_right(record: TicketRecord) -> bool:
    """The proposal equals the label's: nothing when none is due, else the same amount,
    currency, invoices and reasons (one currency per ticket)."""
    want = record.label.refund
    if want is None:
        return not record.would_refund
    if len(record.would_refund) != 1:
        return False
    got = record.would_refund[0]
    return (got.currency, got.amount, got.invoices, sorted(got.reasons)) == (
        want.currency, want.amount, dict(want.invoices), sorted(want.reasons))


def correct(record: TicketRecord) -> bool:
    """Same state and reason as the label, and (for a refund) the same proposal."""
    label = record.label
    same = (record.state, record.reason) == (label.expected_state.value, label.reason)
    return same and _refund_right(record)


def _triage(records: list[TicketRecord]) -> dict[str, Any]:
    billing = [r for r in records if r.label.is_billing is not None]
    billing_ok = sum(r.is_billing == r.label.is_billing for r in billing)
    scored = [r for r in records if r.label.invoice_ids is not None]
    exact = found = expected = reported = 0
    for r in scored:
        want, got = set(r.label.invoice_ids or []), set(r.invoice_ids or [])
        exact += want == got
        found, expected, reported = found + len(want & got), expected + len(want), \
            reported + len(got)
    return {"billing_accuracy": _ratio(billing_ok, len(billing)), "billing_scored": len(billing),
            "ids_exact": _ratio(exact, len(scored)), "ids_scored": len(scored),
            "ids_recall": _ratio(found, expected), "ids_precision": _ratio(found, reported),
            "ids_missed": expected - found, "ids_extra": reported - found}


def _outcomes(records: list[TicketRecord]) -> dict[str, Any]:
    by: dict[str, list[TicketRecord]] = defaultdict(list)
    for r in records:
        by[outcome_name(r.label.expected_state.value, r.label.reason)].append(r)
    confusion = Counter(f"{outcome_name(r.label.expected_state.value, r.label.reason)} -> "
                        f"{outcome_name(r.state, r.reason)}" for r in records if not correct(r))
    return {"accuracy": _ratio(sum(map(correct, records)), len(records)),
            "by_expected": {name: {"total": len(rs), "correct": sum(map(correct, rs)),
                                   "accuracy": _ratio(sum(map(correct, rs)), len(rs))}
                            for name, rs in sorted(by.items())},
            "errors": dict(sorted(confusion.items()))}


def _prf(tp: int, fp: int, fn: int) -> dict[str, Any]:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = (round(2 * precision * recall / (precision + recall), 4)
          if precision and recall else (0.0 if tp + fp and tp + fn else None))
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def _refunds(records: list[TicketRecord]) -> dict[str, Any]:
    """Per reason code, at the ticket level: a refund proposed with that reason (or any)."""
    counts = {code: [0, 0, 0] for code in (*REASONS, "any")}
    for r in records:
        want = set(r.label.refund.reasons) if r.label.refund else set()
        got = {reason for w in r.would_refund for reason in w.reasons}
        for code, tally in counts.items():
            expected = bool(want) if code == "any" else code in want
            proposed = bool(r.would_refund) if code == "any" else code in got
            tally[0] += expected and proposed
            tally[1] += proposed and not expected
            tally[2] += expected and not proposed
    return {code: _prf(*tally) for code, tally in counts.items()}


def _money(records: list[TicketRecord]) -> dict[str, Any]:
    """Per currency: the sum of over-proposals and of under-proposals, invoice by invoice."""
    over: dict[str, Decimal] = defaultdict(lambda: _ZERO)
    under: dict[str, Decimal] = defaultdict(lambda: _ZERO)
    wrong_tickets, seen = 0, set[str]()
    for r in records:
        want: dict[tuple[str, str], Decimal] = {}
        if r.label.refund is not None:
            want = {(r.label.refund.currency, i): a for i, a in r.label.refund.invoices.items()}
        got = {(w.currency, i): a for w in r.would_refund for i, a in w.invoices.items()}
        seen |= {currency for currency, _invoice in want.keys() | got.keys()}
        wrong = False
        for key in want.keys() | got.keys():
            diff = got.get(key, _ZERO) - want.get(key, _ZERO)
            if diff > 0:
                over[key[0]] += diff
            elif diff < 0:
                under[key[0]] -= diff
            wrong |= diff != 0
        wrong_tickets += wrong
    currencies = sorted(seen)
    return {"over": {c: f"{over[c]:.2f}" for c in currencies},
            "under": {c: f"{under[c]:.2f}" for c in currencies},
            "wrong": {c: f"{over[c] + under[c]:.2f}" for c in currencies},
            "tickets_wrong": wrong_tickets}


def _escalations(records: list[TicketRecord]) -> dict[str, Any]:
    escalated = [r for r in records if r.state == State.ESCALATED.value]
    reasons = Counter(r.reason or "unknown" for r in escalated)
    expected = sum(r.label.expected_state is State.ESCALATED for r in records)
    return {"rate": _ratio(len(escalated), len(records)), "count": len(escalated),
            "expected": expected,
            "by_reason": {reason: {"count": reasons.get(reason, 0),
                                   "rate": _ratio(reasons.get(reason, 0), len(records))}
                          for reason in sorted({r.value for r in ESCALATION_REASONS}
                                               | set(reasons))},
            "errors": sum(r.error is not None for r in records)}


def spread(values: Iterable[float]) -> dict[str, float | None]:
    """Mean, 95th percentile (nearest rank) and maximum."""
    ordered = sorted(values)
    if not ordered:
        return {"mean": None, "p95": None, "max": None}
    rank = max(1, math.ceil(0.95 * len(ordered)))
    return {"mean": round(sum(ordered) / len(ordered), 6), "p95": round(ordered[rank - 1], 6),
            "max": round(ordered[-1], 6)}


def _cost(records: list[TicketRecord]) -> dict[str, Any]:
    priced = [r for r in records if r.cost_usd is not None]
    return {"calls": spread(r.calls for r in records),
            "tokens": spread(r.tokens for r in records),
            "cost_usd": spread(float(r.cost_usd or 0) for r in priced),
            "total_cost_usd": f"{sum((r.cost_usd or _ZERO for r in priced), _ZERO):.6f}",
            "total_calls": sum(r.calls for r in records),
            "total_tokens": sum(r.tokens for r in records),
            "unpriced_tickets": len(records) - len(priced)}


def _steps(records: list[TicketRecord]) -> dict[str, Any]:
    seconds: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for step, s in r.step_s.items():
            seconds[step].append(s)
    return {step: {**spread(values), "total": round(sum(values), 3), "runs": len(values)}
            for step, values in seconds.items()}


def _breakdowns(records: list[TicketRecord]) -> dict[str, Any]:
    """Outcome accuracy by how the email was written (language, id style, ...)."""
    out: dict[str, Any] = {}
    for field in BREAKDOWNS:
        groups: dict[str, list[TicketRecord]] = defaultdict(list)
        for r in records:
            if field in r.label.variety:
                groups[str(r.label.variety[field]).lower()].append(r)
        if groups:
            out[field] = {k: {"total": len(rs), "accuracy": _ratio(sum(map(correct, rs)),
                                                                   len(rs))}
                          for k, rs in sorted(groups.items())}
    return out


def score(records: list[TicketRecord]) -> dict[str, Any]:
    """Every metric of docs/evaluation.md for one configuration's records (JSON-ready)."""
    return {"tickets": len(records), "triage": _triage(records),
            "outcomes": _outcomes(records), "refunds": _refunds(records),
            "money": _money(records), "escalations": _escalations(records),
            "cost": _cost(records), "steps": _steps(records),
            "by_variety": _breakdowns(records)}


def flat(report: Mapping[str, Any]) -> dict[str, float]:
    """The gateable numbers of a report, by the names ``--fail-under``/``--fail-over`` take."""
    out: dict[str, float | None] = {
        "outcome_accuracy": report["outcomes"]["accuracy"],
        "triage_billing_accuracy": report["triage"]["billing_accuracy"],
        "triage_ids_exact": report["triage"]["ids_exact"],
        "triage_ids_recall": report["triage"]["ids_recall"],
        "escalation_rate": report["escalations"]["rate"],
        "calls_per_ticket": report["cost"]["calls"]["mean"],
        "tokens_per_ticket": report["cost"]["tokens"]["mean"],
        "cost_per_ticket_usd": report["cost"]["cost_usd"]["mean"],
        "tickets_wrong_money": report["money"]["tickets_wrong"],
    }
    for code, prf in report["refunds"].items():
        suffix = "" if code == "any" else f".{code}"
        for what in ("precision", "recall", "f1"):
            out[f"refund_{what}{suffix}"] = prf[what]
    for kind in ("over", "under", "wrong"):
        for currency, amount in report["money"][kind].items():
            out[f"{kind}_money.{currency}"] = float(amount)
    return {k: float(v) for k, v in out.items() if v is not None}


#: Every name ``flat`` may give, but the money ones (``over_money.USD``, ...).
METRIC_NAMES = frozenset({
    "outcome_accuracy", "triage_billing_accuracy", "triage_ids_exact", "triage_ids_recall",
    "escalation_rate", "calls_per_ticket", "tokens_per_ticket", "cost_per_ticket_usd",
    "tickets_wrong_money",
    *(f"refund_{what}{suffix}" for what in ("precision", "recall", "f1")
      for suffix in ("", *(f".{code}" for code in REASONS)))})
MONEY_METRIC = re.compile(r"^(over|under|wrong)_money\.[A-Z]{3}$")


def unknown_metrics(names: Iterable[str]) -> list[str]:
    """The names no report ever has (a typo in a gate)."""
    return [n for n in names if n not in METRIC_NAMES and not MONEY_METRIC.match(n)]


def gate(report: Mapping[str, Any], floors: Mapping[str, float],
         ceilings: Mapping[str, float]) -> list[str]:
    """Each floor the report is under and each ceiling it is over, as a sentence.

    A money metric with no wrong money in that currency counts as 0; any other metric the
    report lacks (no ticket scored it) fails its gate.
    """
    values, failures = flat(report), []
    for name, floor in floors.items():
        value = values.get(name)
        if value is None or value < floor:
            failures.append(f"{name} = {value} is under {floor}")
    for name, ceiling in ceilings.items():
        value = values.get(name, 0.0 if "_money." in name else None)
        if value is None or value > ceiling:
            failures.append(f"{name} = {value} is over {ceiling}")
    return failures
