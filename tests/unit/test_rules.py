"""The trusted reconciliation rules (SPEC §4): exact, vectorised, and runnable as a script."""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from billing_recon.domain import rules
from billing_recon.store import billing

# SPEC §3 columns, so the test tables look like the real ones (extra columns included).
COLUMNS = billing.COLUMNS

# A clean invoice: 1 x 100.00 at 10% tax = 110.00, paid once in full.
DEFAULTS: dict[str, dict[str, str]] = {
    "customers": {"customer_id": "C1", "name": "Acme", "email": "ap@acme.test",
                  "currency": "USD", "tax_rate": "0.10", "tax_exempt": "false"},
    "price_agreements": {"customer_id": "C1", "sku": "SKU-A", "unit_price": "80.00",
                         "valid_from": "2026-01-01", "valid_to": ""},
    "subscriptions": {"subscription_id": "S1", "customer_id": "C1", "sku": "SKU-A",
                      "started_at": "2025-01-01T00:00:00+00:00", "cancelled_at": ""},
    "invoices": {"invoice_id": "INV-000001", "customer_id": "C1", "subscription_id": "S1",
                 "issued_at": "2026-03-01T10:00:00+00:00", "period_start": "2026-03-01",
                 "period_end": "2026-03-31", "currency": "USD", "subtotal": "100.00",
                 "tax": "10.00", "total": "110.00"},
    "invoice_lines": {"line_id": "L1", "invoice_id": "INV-000001", "sku": "SKU-A",
                      "description": "seat", "quantity": "1", "unit_price": "100.00",
                      "amount": "100.00"},
    "payments": {"payment_id": "P1", "invoice_id": "INV-000001", "customer_id": "C1",
                 "amount": "110.00", "currency": "USD", "paid_at": "2026-03-02T09:00:00+00:00",
                 "charge_ref": "ch_1"},
    "refunds": {"refund_id": "R1", "payment_id": "P1", "amount": "0.00", "currency": "USD",
                "refunded_at": "2026-03-05T09:00:00+00:00", "idempotency_key": ""},
    "credits": {"credit_id": "CR1", "customer_id": "C1", "invoice_id": "INV-000001",
                "amount": "10.00", "currency": "USD", "issued_at": "2026-03-03T09:00:00+00:00"},
}
CENT = Decimal("0.01")
# Tables present with one default row unless a case says otherwise; the rest start empty.
ONE_ROW = ("customers", "subscriptions", "invoices", "invoice_lines", "payments")


def build(case: Mapping[str, list[dict[str, Any]]]) -> dict[str, pd.DataFrame]:
    """SPEC §3 tables of strings: each case row overrides the defaults of its table."""
    tables = {}
    for name, columns in COLUMNS.items():
        rows = case.get(name, [{}] if name in ONE_ROW else [])
        data = [{**DEFAULTS[name], **row} for row in rows]
        tables[name] = pd.DataFrame(data, columns=columns, dtype=object)
    return tables


def outcome(case: Mapping[str, list[dict[str, Any]]]) -> tuple[str, list[str]]:
    """Refundable and reasons of INV-000001."""
    result = rules.reconcile(build(case)).set_index("invoice_id")
    row = result.loc["INV-000001"]
    return row["refundable"], row["reasons"]


def pay(*amounts: str) -> list[dict[str, str]]:
    """Payments P1, P2, ... on INV-000001."""
    return [{"payment_id": f"P{i}", "amount": a} for i, a in enumerate(amounts, start=1)]


CLEAN: dict[str, list[dict[str, str]]] = {}
AGREEMENT_80: dict[str, list[dict[str, str]]] = {"price_agreements": [{}]}

REASON_CASES = {
    "clean_invoice_has_nothing_to_refund": (CLEAN, "0.00", []),
    "duplicate_payment": ({"payments": pay("110.00", "110.00")}, "110.00", ["duplicate_payment"]),
    "agreed_price_below_billed": (AGREEMENT_80, "22.00", ["price_overcharge"]),
    "billed_amount_above_quantity_times_price": (
        {"invoice_lines": [{"amount": "120.00"}],
         "invoices": [{"subtotal": "120.00", "tax": "12.00", "total": "132.00"}],
         "payments": pay("132.00")},
        "22.00", ["price_overcharge"],
    ),
    "post_cancellation": (
        {"subscriptions": [{"cancelled_at": "2026-02-15T12:00:00+00:00"}]},
        "110.00", ["post_cancellation"],
    ),
    "tax_error": (
        {"invoices": [{"tax": "12.00", "total": "112.00"}], "payments": pay("112.00")},
        "2.00", ["tax_error"],
    ),
    "credit_not_applied": ({"credits": [{}]}, "10.00", ["credit_not_applied"]),
    "credit_applied_correctly": (
        {"credits": [{}], "invoices": [{"total": "100.00"}], "payments": pay("100.00")},
        "0.00", [],
    ),
    "several_reasons_at_once": (
        {"price_agreements": [{}], "invoices": [{"tax": "12.00", "total": "112.00"}],
         "payments": pay("112.00", "112.00")},
        "136.00", ["duplicate_payment", "price_overcharge", "tax_error"],
    ),
    "no_reasons_when_nothing_is_refundable": (
        {"invoices": [{"tax": "12.00", "total": "112.00"}], "payments": pay("100.00")},
        "0.00", [],
    ),
}


@pytest.mark.parametrize(("case", "refundable", "reasons"), REASON_CASES.values(),
                         ids=list(REASON_CASES))
def test_reason_codes(case: dict[str, Any], refundable: str, reasons: list[str]) -> None:
    assert outcome(case) == (refundable, reasons)


ROUNDING_CASES = {
    # 1.5 x 0.33 = 0.495 -> 0.50 (truncation would give 0.49); tax 0.05; paid 1.00.
    "line_product_half_up_at_495": ("1.5", "0.33", "0.05", "1.00", "0.45"),
    # 1.5 x 0.31 = 0.465 -> 0.47 (half-even would give 0.46); tax 0.047 -> 0.05.
    "line_product_half_up_not_half_even": ("1.5", "0.31", "0.05", "1.00", "0.48"),
    # 10.25 x 10% = 1.025 -> 1.03 (half-even would give 1.02).
    "tax_half_up_at_1025": ("1", "10.25", "1.03", "12.00", "0.72"),
}


@pytest.mark.parametrize(("quantity", "price", "tax", "paid", "refundable"),
                         ROUNDING_CASES.values(), ids=list(ROUNDING_CASES))
def test_round_half_up(quantity: str, price: str, tax: str, paid: str, refundable: str) -> None:
    subtotal = (Decimal(quantity) * Decimal(price)).quantize(CENT, ROUND_HALF_UP)
    case = {
        "invoice_lines": [{"quantity": quantity, "unit_price": price, "amount": str(subtotal)}],
        "invoices": [{"subtotal": str(subtotal), "tax": tax,
                      "total": str(subtotal + Decimal(tax))}],
        "payments": pay(paid),
    }
    result = rules.reconcile(build(case)).iloc[0]
    assert (result["expected_tax"], result["refundable"], result["reasons"]) == (
        tax, refundable, [])


def test_negative_products_round_half_away_from_zero() -> None:
    # -1.5 x 0.33 = -0.495 -> -0.50 (Decimal ROUND_HALF_UP), so the subtotal is 1.00 - 0.50.
    case = {"invoice_lines": [{"quantity": "1", "unit_price": "1.00", "amount": "1.00"},
                              {"line_id": "L2", "quantity": "-1.5", "unit_price": "0.33",
                               "amount": "-0.50"}],
            "customers": [{"tax_exempt": "true"}]}
    assert rules.reconcile(build(case)).iloc[0]["expected_subtotal"] == "0.50"


# Products a float gets wrong by a cent (seen with float64 half-up): exactness, not luck.
LARGE_PRODUCTS = [("25229.3667", "672873.4565", "16976171176.73"),
                  ("90103.2123", "876265.9543", "78954377311.55"),
                  ("98703.8227", "986117.6616", "97333582831.90")]


@pytest.mark.parametrize(("quantity", "price", "amount"), LARGE_PRODUCTS)
def test_large_products_are_exact(quantity: str, price: str, amount: str) -> None:
    assert (Decimal(quantity) * Decimal(price)).quantize(CENT, ROUND_HALF_UP) == Decimal(amount)
    case = {"invoice_lines": [{"quantity": quantity, "unit_price": price, "amount": amount}],
            "customers": [{"tax_exempt": "true"}]}
    assert rules.reconcile(build(case)).iloc[0]["expected_subtotal"] == amount


REFUND_CASES = {
    "prior_refund_nets_out_the_duplicate": ("110.00", "0.00", []),
    "partial_prior_refund": ("50.00", "60.00", ["duplicate_payment"]),
}


@pytest.mark.parametrize(("refunded", "refundable", "reasons"), REFUND_CASES.values(),
                         ids=list(REFUND_CASES))
def test_prior_refunds_are_netted_out(refunded: str, refundable: str, reasons: list[str]) -> None:
    case = {"payments": pay("110.00", "110.00"),
            "refunds": [{"payment_id": "P2", "amount": refunded}]}
    assert outcome(case) == (refundable, reasons)


@pytest.mark.parametrize("payment_id", ["P9", "P404"], ids=["other_invoice", "unknown_payment"])
def test_refund_of_a_payment_not_on_the_invoice_is_not_netted(payment_id: str) -> None:
    case = {"payments": [{"payment_id": "P9", "invoice_id": "INV-000009", "amount": "5.00"},
                         *pay("110.00", "110.00")],
            "refunds": [{"payment_id": payment_id, "amount": "5.00"}]}
    assert outcome(case) == ("110.00", ["duplicate_payment"])


CANCELLATION_CASES = {
    "cancelled_on_period_start": ("2026-03-01T00:00:00+00:00", "110.00", ["post_cancellation"]),
    "cancelled_late_on_period_start": ("2026-03-01T23:59:59+00:00", "110.00",
                                       ["post_cancellation"]),
    "cancelled_the_day_after": ("2026-03-02T00:00:00+00:00", "0.00", []),
    # Local date 03-02, but 2026-03-01T23:00Z in UTC: on period_start.
    "offset_puts_utc_date_on_period_start": ("2026-03-02T01:00:00+02:00", "110.00",
                                             ["post_cancellation"]),
    # Local date 03-01, but 2026-03-02T04:30Z in UTC: the day after.
    "offset_puts_utc_date_after_period_start": ("2026-03-01T23:30:00-05:00", "0.00", []),
    "never_cancelled": ("", "0.00", []),
}


@pytest.mark.parametrize(("cancelled_at", "refundable", "reasons"), CANCELLATION_CASES.values(),
                         ids=list(CANCELLATION_CASES))
def test_cancellation_boundary(cancelled_at: str, refundable: str, reasons: list[str]) -> None:
    assert outcome({"subscriptions": [{"cancelled_at": cancelled_at}]}) == (refundable, reasons)


def test_cancellation_of_another_subscription_does_not_apply() -> None:
    case = {"subscriptions": [{"subscription_id": "S2", "cancelled_at": "2026-01-01"}]}
    assert outcome(case) == ("0.00", [])


AGREEMENT_CASES = {
    "valid_from_is_issue_date": ({"valid_from": "2026-03-01"}, "22.00"),
    "valid_to_is_issue_date": ({"valid_from": "2026-02-01", "valid_to": "2026-03-01"}, "22.00"),
    "open_valid_to": ({"valid_from": "2025-01-01", "valid_to": ""}, "22.00"),
    "expired_the_day_before": ({"valid_from": "2026-01-01", "valid_to": "2026-02-28"}, "0.00"),
    "starts_the_day_after": ({"valid_from": "2026-03-02"}, "0.00"),
    "agreed_price_above_billed": ({"unit_price": "120.00"}, "0.00"),
    "other_sku": ({"sku": "SKU-B"}, "0.00"),
    "other_customer": ({"customer_id": "C2"}, "0.00"),
}


@pytest.mark.parametrize(("agreement", "refundable"), AGREEMENT_CASES.values(),
                         ids=list(AGREEMENT_CASES))
def test_price_agreement_validity(agreement: dict[str, str], refundable: str) -> None:
    customers = [{}, {"customer_id": "C2", "email": "c2@x.test"}]
    refund, _ = outcome({"price_agreements": [agreement], "customers": customers})
    assert refund == refundable


def test_issue_date_is_the_utc_date_of_issued_at() -> None:
    # 01:00 at +02:00 on 03-01 is 23:00 UTC on 02-28: the agreement is not valid yet.
    case = {"price_agreements": [{"valid_from": "2026-03-01"}],
            "invoices": [{"issued_at": "2026-03-01T01:00:00+02:00"}]}
    assert outcome(case) == ("0.00", [])


def test_lowest_of_several_valid_agreements_wins() -> None:
    case = {"price_agreements": [{"unit_price": "90.00"}, {"unit_price": "70.00"},
                                 {"unit_price": "60.00", "valid_to": "2026-02-01"}]}
    assert outcome(case) == ("33.00", ["price_overcharge"])


EXEMPT_CASES = {
    "exempt_and_billed_without_tax": ({"tax": "0.00", "total": "100.00"}, "100.00", "0.00", []),
    "exempt_but_billed_tax": ({}, "110.00", "10.00", ["tax_error"]),
}


@pytest.mark.parametrize(("invoice", "paid", "refundable", "reasons"), EXEMPT_CASES.values(),
                         ids=list(EXEMPT_CASES))
def test_tax_exempt_customer(invoice: dict[str, str], paid: str, refundable: str,
                             reasons: list[str]) -> None:
    case = {"customers": [{"tax_exempt": "true"}], "invoices": [invoice], "payments": pay(paid)}
    assert outcome(case) == (refundable, reasons)


def test_invoice_without_lines_expects_nothing() -> None:
    result = rules.reconcile(build({"invoice_lines": []})).iloc[0]
    assert (result["expected_subtotal"], result["expected_total"], result["refundable"]) == (
        "0.00", "0.00", "110.00")


def test_result_has_one_sorted_row_per_invoice_with_all_columns() -> None:
    case = {"invoices": [{"invoice_id": "INV-000002"}, {"invoice_id": "INV-000001"}],
            "payments": [{"invoice_id": "INV-000002"}]}
    result = rules.reconcile(build(case))
    assert list(result.columns) == list(rules.RESULT_COLUMNS)
    assert list(result["invoice_id"]) == ["INV-000001", "INV-000002"]
    assert list(result["net_paid"]) == ["0.00", "110.00"]


def test_totals_sum_refundable_per_currency() -> None:
    customers = [{}, {"customer_id": "C2", "email": "e@x.test", "currency": "EUR"}]
    invoices = [{}, {"invoice_id": "INV-000002"},
                {"invoice_id": "INV-000003", "customer_id": "C2", "currency": "EUR"},
                {"invoice_id": "INV-000004", "currency": "GBP"}]
    lines = [{"line_id": f"L{i}", "invoice_id": f"INV-00000{i}"} for i in range(1, 5)]
    payments = [{"payment_id": "P1", "amount": "110.01"},
                {"payment_id": "P2", "invoice_id": "INV-000002", "amount": "112.34"},
                {"payment_id": "P3", "invoice_id": "INV-000003", "amount": "115.00"}]
    summary = rules.summarize(rules.reconcile(build(
        {"customers": customers, "invoices": invoices, "invoice_lines": lines,
         "payments": payments})))
    assert summary["totals"] == {"EUR": "5.00", "GBP": "0.00", "USD": "2.35"}
    assert summary["invoices"]["INV-000003"] == {
        "currency": "EUR", "expected_total": "110.00", "net_paid": "115.00",
        "refundable": "5.00", "reasons": []}


def test_money_columns_accept_trailing_zero_places() -> None:
    # PostgreSQL's Numeric(18, 4) form of 110.00 is exactly 110.00.
    assert outcome({"payments": pay("110.0000")}) == ("0.00", [])


MALFORMED = {
    "two_dots": ("invoice_lines", "quantity", "1.2.3"),
    "comma_decimal": ("invoice_lines", "unit_price", "12,50"),
    "letters": ("payments", "amount", "abc"),
    "exponent": ("invoices", "total", "1e3"),
    "blank": ("invoice_lines", "amount", ""),
    "space_inside": ("credits", "amount", "1 0.00"),
    "fullwidth_digits": ("refunds", "amount", "\uff11\uff10.00"),
    "quantity_with_five_places": ("invoice_lines", "quantity", "1.23456"),
    "amount_with_three_places": ("payments", "amount", "10.005"),
    "rate_with_seven_places": ("customers", "tax_rate", "0.1234567"),
    "too_many_digits": ("invoice_lines", "unit_price", "12345678901234567"),
    "sign_only": ("price_agreements", "unit_price", "-"),
}


@pytest.mark.parametrize(("table", "column", "value"), MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_number_names_table_and_column(table: str, column: str, value: str) -> None:
    case: dict[str, list[dict[str, str]]] = {table: [{column: value}]}
    with pytest.raises(ValueError, match=rf"^{table}\.{column}: "):
        rules.reconcile(build(case))


def test_malformed_date_names_table_and_column() -> None:
    with pytest.raises(ValueError, match=r"^subscriptions\.cancelled_at: "):
        rules.reconcile(build({"subscriptions": [{"cancelled_at": "2026-02-30"}]}))


@pytest.mark.parametrize("table", ["invoices", "customers", "payments"])
def test_duplicate_keys_are_refused(table: str) -> None:
    with pytest.raises(ValueError, match="duplicate key"):
        rules.reconcile(build({table: [{}, {}]}))


def test_invoice_of_unknown_customer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown customer"):
        rules.reconcile(build({"invoices": [{"customer_id": "C404"}]}))


def test_null_cells_read_as_empty() -> None:
    tables = build({"subscriptions": [{"cancelled_at": None}], "customers": [{"tax_exempt": None}]})
    tables["invoices"].loc[0, "subscription_id"] = float("nan")
    assert rules.reconcile(tables).iloc[0]["refundable"] == "0.00"


def test_missing_tables_have_no_rows() -> None:
    tables = build(CLEAN)
    result = rules.reconcile({"customers": tables["customers"], "invoices": tables["invoices"]})
    assert list(result.iloc[0][["expected_subtotal", "net_paid", "refundable"]]) == [
        "0.00", "0.00", "0.00"]


# ------------------------------------------------------------------ script mode


def write_csvs(folder: Path, tables: Mapping[str, pd.DataFrame]) -> None:
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, rules.__file__, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


def test_script_prints_the_summary_as_one_json_document(tmp_path: Path) -> None:
    tables = build({"payments": pay("110.00", "110.00"), "credits": [{"amount": "0.00"}]})
    write_csvs(tmp_path, tables)
    done = run_script(str(tmp_path), cwd=Path.cwd())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == rules.summarize(rules.reconcile(tables))
    assert json.loads(done.stdout)["totals"] == {"USD": "110.00"}


def test_script_reads_the_working_directory_with_only_required_files(tmp_path: Path) -> None:
    tables = build(CLEAN)
    write_csvs(tmp_path, {"customers": tables["customers"], "invoices": tables["invoices"]})
    done = run_script(cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["invoices"]["INV-000001"]["net_paid"] == "0.00"


def test_script_reports_bad_data_on_stderr_only(tmp_path: Path) -> None:
    write_csvs(tmp_path, build({"invoice_lines": [{"quantity": "x"}]}))
    done = run_script(str(tmp_path), cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert "invoice_lines.quantity" in done.stderr


def test_module_imports_only_stdlib_numpy_and_pandas() -> None:
    # The source is shipped into a sandbox that has nothing else.
    tree = ast.parse(Path(rules.__file__).read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    allowed = set(sys.stdlib_module_names) | {"numpy", "pandas"}
    assert {n.split(".")[0] for n in names} <= allowed


# ------------------------------------------------------------------ against a Decimal reference


def utc_day(text: str) -> date:
    stamp = datetime.fromisoformat(text)
    return (stamp if stamp.tzinfo is None else stamp.astimezone(UTC)).date()


def reference(tables: Mapping[str, pd.DataFrame]) -> dict[str, tuple[Any, ...]]:
    """SPEC §4 written the plain way: Decimal, one row at a time."""
    rows = {name: frame.to_dict("records") for name, frame in tables.items()}
    customers = {c["customer_id"]: c for c in rows["customers"]}
    subscriptions = {s["subscription_id"]: s for s in rows["subscriptions"]}
    payments = {p["payment_id"]: p for p in rows["payments"]}
    out = {}
    for inv in rows["invoices"]:
        customer, invoice_id = customers[inv["customer_id"]], inv["invoice_id"]
        rate = Decimal(customer["tax_rate"])
        exempt = customer["tax_exempt"] == "true"
        sub = subscriptions.get(inv["subscription_id"])
        start = date.fromisoformat(inv["period_start"])
        cancelled = bool(sub and sub["cancelled_at"] and utc_day(sub["cancelled_at"]) <= start)
        subtotal, lowered = expected_lines(rows, inv, cancelled)
        tax = Decimal(0) if exempt else (subtotal * rate).quantize(CENT, ROUND_HALF_UP)
        credits = [Decimal(c["amount"]) for c in rows["credits"] if c["invoice_id"] == invoice_id]
        paid = [Decimal(p["amount"]) for p in rows["payments"] if p["invoice_id"] == invoice_id]
        refunded = sum(Decimal(r["amount"]) for r in rows["refunds"]
                       if r["payment_id"] in payments
                       and payments[r["payment_id"]]["invoice_id"] == invoice_id)
        total = max(Decimal(0), subtotal + tax - sum(credits))
        refundable = max(Decimal(0), sum(paid) - refunded - total)
        billed = {k: Decimal(inv[k]) for k in ("subtotal", "tax", "total")}
        right_tax = Decimal(0) if exempt else (billed["subtotal"] * rate).quantize(
            CENT, ROUND_HALF_UP)
        found = {
            "duplicate_payment": len(paid) > 1 and sum(paid) > billed["total"],
            "price_overcharge": lowered, "post_cancellation": cancelled,
            "tax_error": billed["tax"] != right_tax,
            "credit_not_applied": bool(credits) and billed["total"] > max(
                Decimal(0), billed["subtotal"] + billed["tax"] - sum(credits)),
        }
        reasons = sorted(k for k, v in found.items() if v) if refundable > 0 else []
        amounts = (subtotal, tax, total, sum(paid) - refunded, refundable)
        out[invoice_id] = (*(f"{a:.2f}" for a in amounts), reasons)
    return out


def expected_lines(rows: dict[str, list[dict[str, Any]]], inv: dict[str, Any],
                   cancelled: bool) -> tuple[Decimal, bool]:
    day = utc_day(inv["issued_at"])
    subtotal, lowered = Decimal(0), False
    for line in (x for x in rows["invoice_lines"] if x["invoice_id"] == inv["invoice_id"]):
        price = billed_price = Decimal(line["unit_price"])
        for a in rows["price_agreements"]:
            if (a["customer_id"], a["sku"]) == (inv["customer_id"], line["sku"]) and (
                    date.fromisoformat(a["valid_from"]) <= day
                    and (not a["valid_to"] or day <= date.fromisoformat(a["valid_to"]))):
                price = min(price, Decimal(a["unit_price"]))
        amount = (Decimal(line["quantity"]) * price).quantize(CENT, ROUND_HALF_UP)
        lowered = lowered or amount < Decimal(line["amount"]) or price < billed_price
        subtotal += 0 if cancelled else amount
    return subtotal, lowered


def money(rng: random.Random, places: int = 2, high: int = 500) -> str:
    return f"{Decimal(rng.randint(0, high * 10**places)).scaleb(-places):.{places}f}"


def random_tables(seed: int, count: int = 150) -> dict[str, pd.DataFrame]:
    """Random but plausible data that hits every rule, rounding edge and offset often."""
    rng = random.Random(seed)
    case: dict[str, list[dict[str, str]]] = {
        "customers": [{"customer_id": f"C{c}", "email": f"{c}@x.test",
                       "tax_rate": rng.choice(["0.10", "0.0825", "0.20", "0.075", "0"]),
                       "tax_exempt": rng.choice(["true", "false", "false"])} for c in range(3)],
        "price_agreements": [
            {"customer_id": f"C{rng.randrange(3)}", "sku": f"SKU-{rng.randrange(4)}",
             "unit_price": money(rng, rng.choice([2, 4]), 60),
             "valid_from": f"2026-03-0{rng.randint(1, 3)}",
             "valid_to": rng.choice(["", "2026-03-01", "2026-03-02", "2026-02-28"])}
            for _ in range(8)],
        "subscriptions": [{"subscription_id": f"S{s}", "cancelled_at": rng.choice(
            ["", "2026-03-01T00:00:00+00:00", "2026-03-02T01:00:00+02:00",
             "2026-03-01T23:30:00-05:00", "2026-02-27"])} for s in range(6)],
        "invoices": [], "invoice_lines": [], "payments": [], "refunds": [], "credits": [],
    }
    for i in range(count):
        add_random_invoice(rng, case, f"INV-{i:06d}")
    return build(case)


def add_random_invoice(rng: random.Random, case: dict[str, list[dict[str, str]]],
                       invoice_id: str) -> None:
    lines = [{"line_id": f"{invoice_id}-{n}", "invoice_id": invoice_id,
              "sku": f"SKU-{rng.randrange(4)}",
              "quantity": rng.choice(["1", "2", "1.5", "0.25", "3.3333", "-1", "25229.3667"]),
              "unit_price": money(rng, rng.choice([2, 3, 4]), rng.choice([99, 99, 999999]))}
             for n in range(rng.randint(0, 4))]
    billed = Decimal(0)
    for line in lines:
        amount = (Decimal(line["quantity"]) * Decimal(line["unit_price"])).quantize(
            CENT, ROUND_HALF_UP) + rng.choice([0, 0, 0, 1, -1])
        line["amount"] = f"{amount:.2f}"
        billed += amount
    tax = (billed * Decimal(rng.choice(["0.10", "0.0825", "0"]))).quantize(CENT, ROUND_HALF_UP)
    total = billed + tax + rng.choice([0, 0, 5])
    case["invoice_lines"] += lines
    case["invoices"].append({
        "invoice_id": invoice_id, "customer_id": f"C{rng.randrange(3)}",
        "subscription_id": rng.choice(["", "S0", "S1", "S2", "S3", "S4", "S5"]),
        "issued_at": rng.choice(["2026-03-01T10:00:00+00:00", "2026-03-01T01:00:00+02:00",
                                 "2026-03-01T23:30:00-05:00", "2026-03-02"]),
        "subtotal": f"{billed:.2f}", "tax": f"{tax:.2f}", "total": f"{total:.2f}"})
    for p in range(rng.choice([0, 1, 1, 2, 3])):
        payment_id = f"{invoice_id}-P{p}"
        case["payments"].append({"payment_id": payment_id, "invoice_id": invoice_id,
                                 "amount": rng.choice([f"{total:.2f}", money(rng)])})
        if rng.random() < 0.3:
            case["refunds"].append({"refund_id": f"R-{payment_id}", "payment_id": payment_id,
                                    "amount": money(rng, high=50)})
    if rng.random() < 0.3:
        case["credits"].append({"credit_id": f"CR-{invoice_id}", "invoice_id": invoice_id,
                                "amount": money(rng, high=100)})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_decimal_reference_on_random_invoices(seed: int) -> None:
    tables = random_tables(seed)
    result = rules.reconcile(tables)
    columns = ["expected_subtotal", "expected_tax", "expected_total", "net_paid", "refundable"]
    got = {r.invoice_id: (*(getattr(r, c) for c in columns), r.reasons)
           for r in result.itertuples(index=False)}
    assert got == reference(tables)
    # The data must really exercise the rules, or agreeing proves little.
    seen = {reason for row in got.values() for reason in row[-1]}
    assert seen == set(rules.REASONS)


def test_rows_of_invoices_out_of_scope_are_ignored() -> None:
    other = {"invoice_id": "INV-000009"}
    case = {"invoice_lines": [{}, {"line_id": "L9", **other}],
            "payments": [{}, {"payment_id": "P9", **other}],
            "credits": [{"credit_id": "CR9", **other}]}
    result = rules.reconcile(build(case))
    assert result[["invoice_id", "expected_total", "net_paid", "refundable"]].values.tolist() == [
        ["INV-000001", "110.00", "110.00", "0.00"]]
