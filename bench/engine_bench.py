"""Reconciliation engine: the vectorised rules versus the row-by-row Decimal baseline.

    python bench/engine_bench.py [--lines 1000000] [--repeat 2]

Generates SPEC §3 tables of CSV-form strings with ``--lines`` invoice lines (5 per invoice,
10 invoices per customer) and every planted discrepancy SPEC §4 knows: agreed prices with
validity windows, billed line amounts off quantity x price, cancelled subscriptions, wrong tax,
tax-exempt customers, unapplied credits, duplicate payments and earlier refunds. Both engines
run end to end from those string tables (parsing included, which is how the pipeline calls
them); their results are compared field by field before any time is reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rules_rowwise

from billing_recon.domain import rules

LINES_PER_INVOICE = 5
INVOICES_PER_CUSTOMER = 10
SKUS = 20


def _money(cents: np.ndarray) -> list[str]:
    return [f"{'-' if c < 0 else ''}{abs(c) // 100}.{abs(c) % 100:02d}" for c in cents.tolist()]


def _fine(units: np.ndarray) -> list[str]:
    """Four-place decimals (1e-4 units) in the store's CSV form: two places unless more are
    needed ("3.00", "12.50", "0.3333"), like billing._text writes them."""
    out = []
    for u in units.tolist():
        whole, frac = divmod(u, 10_000)
        text = f"{whole}.{frac:04d}"
        out.append(text[:-2] if frac % 100 == 0 else text.rstrip("0"))
    return out


def _half_up(numerator: np.ndarray, divisor: int) -> np.ndarray:
    return (numerator + divisor // 2) // divisor  # non-negative inputs only


def make_tables(lines: int, seed: int = 7) -> dict[str, pd.DataFrame]:
    """SPEC §3 tables of strings with about ``lines`` invoice lines (see module docstring)."""
    rng = np.random.default_rng(seed)
    n_inv = max(1, lines // LINES_PER_INVOICE)
    n_cust = max(1, n_inv // INVOICES_PER_CUSTOMER)
    n_lines = n_inv * LINES_PER_INVOICE
    cust_ids = np.array([f"C{i:07d}" for i in range(n_cust)], dtype=object)
    rate_ppm = rng.choice([200_000, 100_000, 190_000, 75_000], n_cust)
    exempt = rng.random(n_cust) < 0.05
    cancel_month = np.where(rng.random(n_cust) < 0.05, rng.integers(2, 7, n_cust), 0)
    customers = pd.DataFrame({
        "customer_id": cust_ids, "name": "Customer", "email": "x@example.test",
        "currency": "USD", "tax_rate": [f"0.{r:06d}".rstrip("0") for r in rate_ppm],
        "tax_exempt": np.where(exempt, "true", "false")})
    subscriptions = pd.DataFrame({
        "subscription_id": [f"S{i:07d}" for i in range(n_cust)], "customer_id": cust_ids,
        "sku": "PLAN", "started_at": "2025-01-01T00:00:00+00:00",
        "cancelled_at": [f"2026-{m:02d}-01T18:45:00+00:00" if m else "" for m in cancel_month]})
    # Agreements: a tenth of the customers, two skus each, some windows already closed.
    with_terms = np.flatnonzero(rng.random(n_cust) < 0.10)
    terms_cust = np.repeat(with_terms, 2)
    terms_sku = rng.integers(0, SKUS, terms_cust.size)
    terms_price = rng.integers(100, 50_000, terms_cust.size) * 100  # 1e-4 units, whole cents
    closed = rng.random(terms_cust.size) < 0.3
    agreements = pd.DataFrame({
        "customer_id": cust_ids[terms_cust], "sku": [f"SKU-{s:02d}" for s in terms_sku],
        "unit_price": _fine(terms_price), "valid_from": "2026-01-01",
        "valid_to": np.where(closed, "2026-03-15", "")})
    inv_cust = np.arange(n_inv) % n_cust
    month = rng.integers(1, 7, n_inv)
    day = rng.integers(1, 29, n_inv)
    periodic = rng.random(n_inv) < 0.7
    # Lines: quantity in 1e-4 units (some fractional), unit price in whole cents.
    line_inv = np.repeat(np.arange(n_inv), LINES_PER_INVOICE)
    sku = rng.integers(0, SKUS, n_lines)
    qty = rng.integers(1, 41, n_lines) * 10_000
    qty = np.where(rng.random(n_lines) < 0.1, rng.integers(1, 400_000, n_lines), qty)
    price = rng.integers(50, 200_000, n_lines) * 100
    amount = _half_up(qty * price, 10**6)
    amount = np.where(rng.random(n_lines) < 0.01, amount + 100, amount)  # billed off by 1.00
    subtotal = np.zeros(n_inv, np.int64)
    np.add.at(subtotal, line_inv, amount)
    rate = np.where(exempt, 0, rate_ppm)[inv_cust]
    tax = _half_up(subtotal * rate, 10**6)
    tax = np.where(rng.random(n_inv) < 0.01, tax + 50, tax)  # wrong tax
    has_credit = rng.random(n_inv) < 0.02
    credit = rng.integers(100, 5_000, n_inv)
    applied = rng.random(n_inv) < 0.5
    total = subtotal + tax - np.where(has_credit & applied, credit, 0)
    total = np.maximum(total, 0)
    inv_ids = np.array([f"INV-{i:08d}" for i in range(n_inv)], dtype=object)
    invoices = pd.DataFrame({
        "invoice_id": inv_ids, "customer_id": cust_ids[inv_cust],
        "subscription_id": np.where(periodic, subscriptions["subscription_id"].to_numpy()[
            inv_cust], ""),
        "issued_at": [f"2026-{m:02d}-{d:02d}T10:30:00+00:00" for m, d in zip(
            month.tolist(), day.tolist(), strict=True)],
        "period_start": np.where(periodic, [f"2026-{m:02d}-01" for m in month.tolist()], ""),
        "period_end": "", "currency": "USD", "subtotal": _money(subtotal), "tax": _money(tax),
        "total": _money(total)})
    invoice_lines = pd.DataFrame({
        "line_id": [f"L{i:09d}" for i in range(n_lines)], "invoice_id": inv_ids[line_inv],
        "sku": [f"SKU-{s:02d}" for s in sku.tolist()], "description": "item",
        "quantity": _fine(qty), "unit_price": _fine(price), "amount": _money(amount)})
    twice = rng.random(n_inv) < 0.03
    pay_inv = np.concatenate([np.arange(n_inv), np.flatnonzero(twice)])
    pay_ids = np.array([f"P{i:08d}" for i in range(pay_inv.size)], dtype=object)
    payments = pd.DataFrame({
        "payment_id": pay_ids, "invoice_id": inv_ids[pay_inv],
        "customer_id": cust_ids[inv_cust[pay_inv]], "amount": _money(total[pay_inv]),
        "currency": "USD", "paid_at": "2026-06-30T09:00:00+00:00", "charge_ref": "ch"})
    refunded = np.flatnonzero(rng.random(pay_inv.size) < 0.01)
    refunds = pd.DataFrame({
        "refund_id": [f"R{i:08d}" for i in range(refunded.size)],
        "payment_id": pay_ids[refunded], "amount": _money(total[pay_inv[refunded]] // 3),
        "currency": "USD", "refunded_at": "2026-07-01T09:00:00+01:00", "idempotency_key": ""})
    credited = np.flatnonzero(has_credit)
    credits = pd.DataFrame({
        "credit_id": [f"CN{i:08d}" for i in range(credited.size)],
        "customer_id": cust_ids[inv_cust[credited]], "invoice_id": inv_ids[credited],
        "amount": _money(credit[credited]), "currency": "USD",
        "issued_at": "2026-07-01T09:00:00+00:00"})
    return {"customers": customers, "price_agreements": agreements,
            "subscriptions": subscriptions, "invoices": invoices,
            "invoice_lines": invoice_lines, "payments": payments, "refunds": refunds,
            "credits": credits}


def disagreements(a: pd.DataFrame, b: pd.DataFrame, limit: int = 5) -> list[str]:
    """Field-by-field differences of two reconcile results (empty when they agree)."""
    if list(a["invoice_id"]) != list(b["invoice_id"]):
        return ["the results cover different invoices"]
    out: list[str] = []
    for column in rules.RESULT_COLUMNS[1:]:
        left, right = a[column].tolist(), b[column].tolist()
        if column == "reasons":
            left, right = [list(x) for x in left], [list(x) for x in right]
        out += [f"{a['invoice_id'].iat[i]}.{column}: {left[i]!r} != {right[i]!r}"
                for i in range(len(left)) if left[i] != right[i]][:limit - len(out)]
        if len(out) >= limit:
            break
    return out


def _timed(fn: Any, tables: dict[str, pd.DataFrame]) -> tuple[float, pd.DataFrame]:
    gc.collect()
    start = time.perf_counter()
    result = fn(tables)
    return time.perf_counter() - start, result


def floor_s(tables: dict[str, pd.DataFrame]) -> float:
    """Seconds to merely touch the line table's strings once, the way any exact in-process
    engine must: read each number column out of pandas and join it into one buffer, and hash
    every line's invoice_id into the invoice index. No parsing, no rules."""
    lines = tables["invoice_lines"]
    gc.collect()
    start = time.perf_counter()
    for column in ("quantity", "unit_price", "amount"):
        ",".join(lines[column].to_numpy(dtype=object).tolist()).encode("ascii")
    pd.Index(tables["invoices"]["invoice_id"]).get_indexer(lines["invoice_id"])
    return time.perf_counter() - start


def run(lines: int, repeat: int = 2, seed: int = 7) -> dict[str, Any]:
    """Generate, check agreement, time both engines alternately; the medians and the ratio."""
    tables = make_tables(lines, seed)
    n_lines = len(tables["invoice_lines"])
    fast: list[float] = []
    slow: list[float] = []
    checked: list[str] | None = None
    for _ in range(repeat):  # alternate, so drifting machine load hits both alike
        seconds, vectorised = _timed(rules.reconcile, tables)
        fast.append(seconds)
        seconds, rowwise = _timed(rules_rowwise.reconcile, tables)
        slow.append(seconds)
        if checked is None:
            checked = disagreements(vectorised, rowwise)
            if checked:
                raise AssertionError("engines disagree: " + "; ".join(checked))
            refundable = int((vectorised["refundable"] != "0.00").sum())
    fast_s, slow_s = statistics.median(fast), statistics.median(slow)
    touch_s = min(floor_s(tables) for _ in range(repeat))
    return {"lines": n_lines, "invoices": len(tables["invoices"]),
            "refundable_invoices": refundable, "vectorised_s": fast_s, "rowwise_s": slow_s,
            "vectorised_rows_per_s": n_lines / fast_s, "rowwise_rows_per_s": n_lines / slow_s,
            "ratio": slow_s / fast_s, "agree": True, "runs": repeat, "floor_s": touch_s,
            "ratio_ceiling": slow_s / touch_s}


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args()
    result = run(args.lines, args.repeat)
    if args.json:
        print(json.dumps(result))
        return 0
    for key, value in result.items():
        print(f"{key:24} {value:,.3f}" if isinstance(value, float) else f"{key:24} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
