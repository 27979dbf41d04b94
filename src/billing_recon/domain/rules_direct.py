"""The trusted rules' summary for a small scope, computed directly (no DataFrame operations).

``rules.summarize(rules.reconcile(tables))`` costs 7-10 ms whatever the size of its input:
pandas and numpy set up a few dozen column operations even for one invoice with two lines, the
usual scope of a ticket. This module computes the same summary with Python integers, row by
row, in well under a millisecond for such a scope, and hands anything unusual back:

- :func:`trusted_summary` is what the pipeline calls: the direct result when the scope is small
  and every value is in the canonical form the store writes, else the vectorised rules (which
  also produce the error message for malformed data).
- :func:`direct_summary` returns ``None`` instead of guessing whenever its input leaves that
  form: a missing column, an empty or repeated key, an unknown customer, a number outside
  ``[+-]digits[.digits]`` or with significant digits beyond the column's places, any scaled
  number of 1e9 units or more (so no sum or product can come near the int64 bounds where the
  vectorised rules refuse), a date that is not ``YYYY-MM-DD`` or an ISO 8601 timestamp with a
  ``Z``/``+HH:MM`` zone, a flag outside true/false/1/0, a non-string cell.

So a ``None`` never changes a result, only its cost; tests/unit/test_rules_direct.py checks on
generated scopes (well-formed and malformed) that every direct result equals the vectorised one
and that the direct path takes the ordinary cases. Amounts are integers in the same units as
``rules`` (cents; 1e-4 for quantity and unit price; 1e-6 for tax rates), rounded half away
from zero exactly as ``rules._mul_round``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

import pandas as pd

from billing_recon.domain import rules

#: The most rows (all tables together) computed directly; larger scopes go to the vectorised
#: rules, which win from a few thousand rows on (bench/rules_direct_bench.py).
DIRECT_MAX_ROWS: Final = 2_000
_LIMIT: Final = 10**9  # scaled magnitude bound of every number taken directly
_NUMBER: Final = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")
_DAY: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_STAMP: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})?")
_FLAGS: Final = {"true": True, "1": True, "false": False, "0": False, "": False}


class _Unsure(Exception):
    """The input leaves the form the direct path takes: let the vectorised rules decide."""


def trusted_summary(tables: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """``rules.summarize(rules.reconcile(tables))``, directly for a small canonical scope."""
    if sum(len(frame) for frame in tables.values()) <= DIRECT_MAX_ROWS:
        summary = direct_summary(tables)
        if summary is not None:
            return summary
    return rules.summarize(rules.reconcile(tables))


def direct_summary(tables: Mapping[str, pd.DataFrame]) -> dict[str, Any] | None:
    """The summary computed row by row, or None when the input is not plainly well-formed."""
    try:
        return _summary({name: _rows(tables, name) for name in rules.TABLES})
    except _Unsure:
        return None


# ---------------------------------------------------------------- reading cells


def _rows(tables: Mapping[str, pd.DataFrame], name: str) -> list[tuple[Any, ...]]:
    columns = rules.TABLES[name]
    frame = tables.get(name)
    if frame is None or len(frame) == 0:
        return []
    if any(c not in frame.columns for c in columns):
        raise _Unsure
    return list(zip(*(frame[c].tolist() for c in columns), strict=True))


def _empty(value: Any) -> bool:
    if value is None or value == "":
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if not isinstance(value, str):
        raise _Unsure  # a typed cell: the vectorised rules know how pandas treats it
    return False


def _key(value: Any) -> str:
    if _empty(value):
        raise _Unsure
    return str(value)


def _scaled(value: Any, places: int) -> int:
    """``[+-]digits[.digits]`` as an integer count of 10**-places."""
    if _empty(value):
        raise _Unsure
    match = _NUMBER.fullmatch(value)
    if match is None:
        raise _Unsure
    sign, whole, fraction = match.group(1), match.group(2), match.group(3) or ""
    if (not whole and not fraction) or len(whole) + places > 18:
        raise _Unsure  # no digit at all; or more than 18 digits once scaled (leading zeros count)
    if fraction[places:].strip("0"):
        raise _Unsure  # significant digits beyond the column's places: an error message
    number = int((whole or "0") + fraction[:places].ljust(places, "0"))
    if number >= _LIMIT:
        raise _Unsure
    return -number if sign == "-" else number


def _day(value: Any) -> date | None:
    """The UTC calendar date of a date or timestamp (no zone: UTC); None when empty."""
    if _empty(value):
        return None
    try:
        if _DAY.fullmatch(value):
            return date.fromisoformat(value)
        if _STAMP.fullmatch(value):
            moment = datetime.fromisoformat(value)
            return (moment.astimezone(UTC) if moment.tzinfo else moment).date()
    except ValueError:
        pass  # e.g. 2026-02-30: the vectorised rules name the row
    raise _Unsure


def _flag(value: Any) -> bool:
    text = "" if _empty(value) else value.strip().lower()
    if text not in _FLAGS:
        raise _Unsure
    return _FLAGS[text]


def _mul_round(x: int, y: int, divisor: int) -> int:
    """ROUND_HALF_UP(x * y / divisor), .5 away from zero, as ``rules._mul_round``."""
    magnitude = (abs(x) * abs(y) * 2 + divisor) // (2 * divisor)
    return -magnitude if (x < 0) != (y < 0) else magnitude


def _unique(keys: list[str]) -> None:
    if len(set(keys)) != len(keys):
        raise _Unsure


def _money(cents: int) -> str:
    whole, part = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}{whole}.{part:02d}"


# ---------------------------------------------------------------- the rules (SPEC §4)


def _customers(rows: list[tuple[Any, ...]]) -> dict[str, tuple[int, bool]]:
    keys = [_key(r[0]) for r in rows]
    _unique(keys)
    return {k: (_scaled(r[1], rules.RATE_PLACES), _flag(r[2])) for k, r in zip(keys, rows,
                                                                                 strict=True)}


def _cancellations(rows: list[tuple[Any, ...]]) -> dict[str, date | None]:
    present = [r for r in rows if not _empty(r[0])]
    keys = [str(r[0]) for r in present]
    _unique(keys)
    return {k: _day(r[1]) for k, r in zip(keys, present, strict=True)}


def _agreements(rows: list[tuple[Any, ...]]
                ) -> dict[tuple[str, str], list[tuple[int, date | None, date | None]]]:
    found: dict[tuple[str, str], list[tuple[int, date | None, date | None]]] = {}
    for customer, sku, price, start, end in rows:
        if _empty(customer) or _empty(sku):
            continue
        found.setdefault((customer, sku), []).append(
            (_scaled(price, rules.UNIT_PLACES), _day(start), _day(end)))
    return found


def _invoices(rows: list[tuple[Any, ...]], customers: dict[str, tuple[int, bool]],
              cancelled: dict[str, date | None]) -> dict[str, dict[str, Any]]:
    keys = [_key(r[0]) for r in rows]
    _unique(keys)
    invoices: dict[str, dict[str, Any]] = {}
    for iid, row in zip(keys, rows, strict=True):
        _, customer, subscription, issued, start, currency, subtotal, tax, total = row
        if _empty(customer) or customer not in customers:
            raise _Unsure
        stop = None if _empty(subscription) else cancelled.get(subscription)
        period = _day(start)
        invoices[iid] = {
            "customer": customer, "currency": "" if _empty(currency) else currency,
            "issued": _day(issued),
            "post_cancel": stop is not None and period is not None and stop <= period,
            "subtotal": _scaled(subtotal, rules.MONEY_PLACES),
            "tax": _scaled(tax, rules.MONEY_PLACES), "total": _scaled(total, rules.MONEY_PLACES),
            "expected": 0, "lowered": False, "credits": 0, "credit_count": 0, "paid": 0,
            "payment_count": 0, "refunded": 0,
        }
    return invoices


def _lines(rows: list[tuple[Any, ...]], invoices: dict[str, dict[str, Any]],
           agreements: dict[tuple[str, str], list[tuple[int, date | None, date | None]]]
           ) -> None:
    """Rules 1-4: each invoice's expected subtotal and whether a line was lowered."""
    for iid, sku, quantity, unit_price, amount in rows:
        inv = None if _empty(iid) else invoices.get(iid)
        if inv is None:
            continue  # a line of an invoice out of scope is not ours to judge
        billed_price = _scaled(unit_price, rules.UNIT_PLACES)
        billed_amount = _scaled(amount, rules.MONEY_PLACES)
        price, issued = billed_price, inv["issued"]
        for agreed, start, end in ([] if _empty(sku) else
                                   agreements.get((inv["customer"], sku), [])):
            if (issued is not None and start is not None and start <= issued
                    and (end is None or issued <= end)):
                price = min(price, agreed)
        owed = _mul_round(_scaled(quantity, rules.UNIT_PLACES), price, 10**6)
        inv["lowered"] |= owed < billed_amount or price < billed_price
        if not inv["post_cancel"]:
            inv["expected"] += owed


def _money_flows(tables: dict[str, list[tuple[Any, ...]]],
                 invoices: dict[str, dict[str, Any]]) -> None:
    """Rules 5-6 inputs: credits, payments and the refunds of those payments."""
    for iid, amount in tables["credits"]:
        inv = None if _empty(iid) else invoices.get(iid)
        if inv is not None:
            inv["credits"] += _scaled(amount, rules.MONEY_PLACES)
            inv["credit_count"] += 1
    payments = tables["payments"]
    keys = [_key(r[0]) for r in payments]
    _unique(keys)
    paid_to: dict[str, dict[str, Any]] = {}
    for pid, (_, iid, amount) in zip(keys, payments, strict=True):
        inv = None if _empty(iid) else invoices.get(iid)
        if inv is not None:
            inv["paid"] += _scaled(amount, rules.MONEY_PLACES)
            inv["payment_count"] += 1
            paid_to[pid] = inv
    for pid, amount in tables["refunds"]:
        inv = None if _empty(pid) else paid_to.get(pid)
        if inv is not None:
            inv["refunded"] += _scaled(amount, rules.MONEY_PLACES)


def _outcome(inv: dict[str, Any], rate: int, exempt: bool) -> dict[str, Any]:
    subtotal = inv["expected"]
    tax = 0 if exempt else _mul_round(subtotal, rate, 10**6)
    total = max(0, subtotal + tax - inv["credits"])
    net_paid = inv["paid"] - inv["refunded"]
    refundable = max(0, net_paid - total)
    reasons: list[str] = []
    if refundable > 0:
        correct_tax = 0 if exempt else _mul_round(inv["subtotal"], rate, 10**6)
        credited_total = max(0, inv["subtotal"] + inv["tax"] - inv["credits"])
        found = {
            "credit_not_applied": inv["credit_count"] > 0 and inv["total"] > credited_total,
            "duplicate_payment": inv["payment_count"] > 1 and inv["paid"] > inv["total"],
            "post_cancellation": inv["post_cancel"],
            "price_overcharge": inv["lowered"],
            "tax_error": inv["tax"] != correct_tax,
        }
        reasons = [code for code in rules.REASONS if found[code]]
    return {"currency": inv["currency"], "expected_total": _money(total),
            "net_paid": _money(net_paid), "refundable": refundable, "reasons": reasons}


def _summary(tables: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    customers = _customers(tables["customers"])
    invoices = _invoices(tables["invoices"], customers, _cancellations(tables["subscriptions"]))
    _lines(tables["invoice_lines"], invoices, _agreements(tables["price_agreements"]))
    _money_flows(tables, invoices)
    result: dict[str, Any] = {}
    totals: dict[str, int] = {}
    for iid in sorted(invoices):
        inv = invoices[iid]
        row = _outcome(inv, *customers[inv["customer"]])
        totals[row["currency"]] = totals.get(row["currency"], 0) + row["refundable"]
        result[iid] = {**row, "refundable": _money(row["refundable"])}
    return {"invoices": result, "totals": {c: _money(totals[c]) for c in sorted(totals)}}
