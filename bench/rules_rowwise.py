"""The row-by-row baseline: SPEC §4 written the straightforward way, one Python loop per table.

Same input as ``billing_recon.domain.rules.reconcile`` (SPEC §3 tables as DataFrames of CSV-form
strings) and the same output shape, with every amount a ``Decimal`` rounded ROUND_HALF_UP to
cents at the points SPEC §4 names. It follows the decisions rules.py documents where the SPEC is
silent (price_overcharge is judged before rule 3 zeroes a line; empty tax_exempt is false; an
empty valid_from never matches; lines, payments and credits of unknown invoices are ignored).
It validates less than rules.py (it is a baseline for speed and a cross-check for values, not a
second parser of untrusted input).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
REASONS = ("credit_not_applied", "duplicate_payment", "post_cancellation", "price_overcharge",
           "tax_error")


def _rows(tables: Mapping[str, pd.DataFrame], name: str,
          *columns: str) -> Iterator[tuple[Any, ...]]:
    frame = tables.get(name)
    if frame is None or len(frame) == 0:
        return iter(())
    return zip(*(frame[c].tolist() for c in columns), strict=True)


def _empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and value != value)


def _day(text: Any) -> date | None:
    """The UTC calendar date of an ISO date or timestamp (no zone = UTC); None when empty."""
    if _empty(text):
        return None
    if len(text) == 10:
        return date.fromisoformat(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(UTC).date()


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _flag(text: Any) -> bool:
    return not _empty(text) and str(text).strip().lower() in ("true", "1")


def reconcile(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """SPEC §4 for every invoice, row by row; the same columns as rules.reconcile."""
    terms = {cid: (Decimal(rate), _flag(exempt)) for cid, rate, exempt
             in _rows(tables, "customers", "customer_id", "tax_rate", "tax_exempt")}
    agreements: dict[tuple[str, str], list[tuple[Decimal, date | None, date | None]]] = {}
    for cid, sku, price, start, end in _rows(tables, "price_agreements", "customer_id", "sku",
                                             "unit_price", "valid_from", "valid_to"):
        agreements.setdefault((cid, sku), []).append((Decimal(price), _day(start), _day(end)))
    cancelled = {sid: _day(at) for sid, at
                 in _rows(tables, "subscriptions", "subscription_id", "cancelled_at")}
    invoices: dict[str, dict[str, Any]] = {}
    for iid, cid, sid, issued, start, currency, subtotal, tax, total in _rows(
            tables, "invoices", "invoice_id", "customer_id", "subscription_id", "issued_at",
            "period_start", "currency", "subtotal", "tax", "total"):
        cancel_day = None if _empty(sid) else cancelled.get(sid)
        period = _day(start)
        invoices[iid] = {
            "customer_id": cid, "currency": "" if _empty(currency) else currency,
            "issued": _day(issued),
            "post_cancel": cancel_day is not None and period is not None and cancel_day <= period,
            "subtotal": Decimal(subtotal), "tax": Decimal(tax), "total": Decimal(total),
            "expected": ZERO, "lowered": False, "credits": ZERO, "credit_count": 0,
            "paid": ZERO, "payment_count": 0, "refunded": ZERO,
        }
    for iid, sku, quantity, price, amount in _rows(tables, "invoice_lines", "invoice_id", "sku",
                                                   "quantity", "unit_price", "amount"):
        inv = invoices.get(iid)
        if inv is None:
            continue
        billed_price = Decimal(price)
        expected_price = billed_price
        for agreed, start, end in agreements.get((inv["customer_id"], sku), ()):
            valid = start is not None and start <= inv["issued"] and (end is None
                                                                     or inv["issued"] <= end)
            if valid and agreed < expected_price:
                expected_price = agreed
        expected = _round(Decimal(quantity) * expected_price)
        if expected < Decimal(amount) or expected_price < billed_price:
            inv["lowered"] = True
        if not inv["post_cancel"]:
            inv["expected"] += expected
    for iid, amount in _rows(tables, "credits", "invoice_id", "amount"):
        if iid in invoices:
            invoices[iid]["credits"] += Decimal(amount)
            invoices[iid]["credit_count"] += 1
    paid_to: dict[str, str] = {}
    for pid, iid, amount in _rows(tables, "payments", "payment_id", "invoice_id", "amount"):
        paid_to[pid] = iid
        if iid in invoices:
            invoices[iid]["paid"] += Decimal(amount)
            invoices[iid]["payment_count"] += 1
    for pid, amount in _rows(tables, "refunds", "payment_id", "amount"):
        iid = paid_to.get(pid)
        if iid in invoices:
            invoices[iid]["refunded"] += Decimal(amount)
    rows = [_result(iid, inv, *terms[inv["customer_id"]]) for iid, inv in invoices.items()]
    rows.sort(key=lambda row: row["invoice_id"])
    return pd.DataFrame(rows, columns=["invoice_id", "customer_id", "currency",
                                       "expected_subtotal", "expected_tax", "expected_total",
                                       "net_paid", "refundable", "reasons"])


def _result(iid: str, inv: dict[str, Any], rate: Decimal, exempt: bool) -> dict[str, Any]:
    subtotal = inv["expected"]
    tax = ZERO if exempt else _round(subtotal * rate)
    total = max(ZERO, subtotal + tax - inv["credits"])
    net_paid = inv["paid"] - inv["refunded"]
    refundable = max(ZERO, net_paid - total)
    reasons = []
    if refundable > 0:
        correct_tax = ZERO if exempt else _round(inv["subtotal"] * rate)
        credited_total = max(ZERO, inv["subtotal"] + inv["tax"] - inv["credits"])
        found = {
            "credit_not_applied": inv["credit_count"] > 0 and inv["total"] > credited_total,
            "duplicate_payment": inv["payment_count"] > 1 and inv["paid"] > inv["total"],
            "post_cancellation": inv["post_cancel"],
            "price_overcharge": inv["lowered"],
            "tax_error": inv["tax"] != correct_tax,
        }
        reasons = [code for code in REASONS if found[code]]
    return {"invoice_id": iid, "customer_id": inv["customer_id"], "currency": inv["currency"],
            "expected_subtotal": _money(subtotal), "expected_tax": _money(tax),
            "expected_total": _money(total), "net_paid": _money(net_paid),
            "refundable": _money(refundable), "reasons": reasons}


def _money(value: Decimal) -> str:
    return f"{_round(value):.2f}"
