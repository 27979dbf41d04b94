"""The reference script (the offline model's analysis answer) agrees with the trusted rules.

It is an independent implementation of SPEC §4, so random data checks both against each other.
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from billing_recon.domain import rules
from billing_recon.llm.reference_script import SCRIPT
from billing_recon.store.billing import COLUMNS

STAMPS = ["2026-03-01T08:00:00+00:00", "2026-03-01T23:30:00-02:00", "2026-02-28T23:59:59+00:00",
          "2026-03-15T00:00:00+01:00"]
DAYS = ["", "2026-01-01", "2026-02-28", "2026-03-01", "2026-03-02", "2026-04-01"]


def _money(rng: random.Random, high: int = 20_000) -> str:
    return f"{rng.randint(0, high) / 100:.2f}"


def _invoice(rng: random.Random, i: int, cust: str, sub: str, t: dict[str, list[Any]]) -> None:
    inv = f"INV-{i:06d}"
    subtotal = 0.0
    for n in range(rng.randint(0, 3)):
        qty = rng.choice(["1", "2", "3", "1.5", "0.25", "7"])
        price = rng.choice(["10.00", "12.50", "0.125", "3.3333", "99.99", "0.005"])
        amount = rng.choice([_money(rng, 5000), f"{float(qty) * float(price):.2f}"])
        subtotal += float(amount)
        t["invoice_lines"].append([f"L{i}-{n}", inv, rng.choice(["A", "B"]), "", qty, price,
                                   amount])
    tax = rng.choice([f"{subtotal * 0.2:.2f}", "0.00", _money(rng, 3000)])
    total = rng.choice([f"{subtotal + float(tax):.2f}", _money(rng)])
    t["invoices"].append([inv, cust, sub, rng.choice(STAMPS), rng.choice(DAYS), "",
                          rng.choice(["USD", "EUR"]), f"{subtotal:.2f}", tax, total])
    for n in range(rng.choice([0, 1, 1, 2, 3])):
        pay = f"P{i}-{n}"
        t["payments"].append([pay, inv, cust, rng.choice([total, _money(rng)]), "USD",
                              STAMPS[0], f"ch_{pay}"])
        if rng.random() < 0.2:
            t["refunds"].append([f"R{pay}", pay, _money(rng, 2000), "USD", STAMPS[1], ""])
    if rng.random() < 0.25:
        t["credits"].append([f"C{i}", cust, inv, _money(rng, 3000), "USD", STAMPS[0]])


def _boundaries(t: dict[str, list[Any]]) -> None:
    """Cases random data rarely hits: each one sits on the edge of a rule."""
    day, stamp = "2026-03-01", "2026-03-01T08:00:00+00:00"
    t["customers"].append(["E", "n", "e@x", "USD", "0.20", "false"])
    t["subscriptions"].append(["SE", "E", "A", stamp, "2026-02-01T00:00:00+00:00"])
    t["price_agreements"].append(["E", "Z", "10.00", "", ""])  # no valid_from: never applies
    rows = [  # invoice, subscription, sku, line price, subtotal, tax, total, payments, credit
        ("INV-900001", "SE", "A", "10.00", "20.00", "4.00", "24.00", ["24.00"], None),
        ("INV-900002", "", "Z", "15.00", "30.00", "6.00", "36.00", ["18.00", "18.00"], "6.00"),
        ("INV-900003", "", "A", "25.00", "50.00", "10.00", "50.00", ["50.00", "5.00"], "10.00"),
    ]
    for inv, sub, sku, price, subtotal, tax, total, pays, credit in rows:
        t["invoices"].append([inv, "E", sub, stamp, day, "", "USD", subtotal, tax, total])
        t["invoice_lines"].append([f"L{inv}", inv, sku, "", "2", price, subtotal])
        t["payments"] += [[f"P{inv}-{n}", inv, "E", amount, "USD", stamp, ""]
                          for n, amount in enumerate(pays)]
        if credit:
            t["credits"].append([f"C{inv}", "E", inv, credit, "USD", stamp])


def _tables(seed: int) -> dict[str, list[Any]]:
    rng = random.Random(seed)
    t: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for c in range(12):
        cust = f"C{c}"
        t["customers"].append([cust, "n", f"{cust}@x", "USD", rng.choice(["0.20", "0.075", "0"]),
                               rng.choice(["true", "false", "", "TRUE", "1", "0"])])
        for sku in ("A", "B"):
            if rng.random() < 0.7:
                t["price_agreements"].append([cust, sku, rng.choice(["9.00", "12.50", "0.1"]),
                                              rng.choice(DAYS), rng.choice(DAYS)])
        t["subscriptions"].append([f"S{c}", cust, "A", STAMPS[0], rng.choice(["", *STAMPS])])
        for i in range(10):
            _invoice(rng, c * 100 + i, cust, rng.choice(["", f"S{c}"]), t)
    _boundaries(t)
    return t


def _write(folder: Path, tables: dict[str, list[Any]]) -> None:
    for name, rows in tables.items():
        with (folder / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS[name])
            writer.writerows(rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reference_script_equals_the_trusted_rules_on_random_data(
        seed: int, tmp_path: Path) -> None:
    _write(tmp_path, _tables(seed))
    run = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=True)
    got = json.loads(run.stdout)
    want = rules.summarize(rules.reconcile(rules.load_tables(tmp_path)))
    assert got["invoices"] == want["invoices"]
    assert {k: v for k, v in got["totals"].items()} == want["totals"]
    assert any(row["reasons"] for row in want["invoices"].values())  # the data is not trivial
