"""The direct path of the trusted rules (domain/rules_direct.py) against the vectorised rules.

Property: on generated scopes, well-formed and malformed, whenever the direct path gives a
summary it equals ``rules.summarize(rules.reconcile(...))`` exactly (strings, so Decimal-exact),
and it gives one for the ordinary cases (else it would be a no-op passing every comparison).
"""

from __future__ import annotations

import random
from typing import Any

import pandas as pd
import pytest

from billing_recon.domain import rules, rules_direct
from billing_recon.store import billing
from billing_recon.store.sample_data import generate

CASES = 1_000

# Cells in odd forms: some the vectorised rules accept ('+5', '5.', '.5', '1.2300', leading
# zeros), some they refuse (exponents, spaces, commas, excess places, too many digits).
ODD_NUMBERS = ["+5", "5.", ".5", "1.2300", "007.10", "-0.00", "1e3", " 5", "5 ", "1,000",
               "1.234", "", None, float("nan"), "0000000000000000001", "12345678901.00", "-",
               ".", "١٢"]
ODD_DATES = ["2026-02-30", "2026-3-1", "2026-03-01T10:00", "2026-03-01T10:00:00Z",
             "2026-03-01 23:30:00-05:00", "2026-03-01T10:00:00.123456+02:00", "tomorrow", "",
             None, "2026-03-01T10:00:00+0530", "20260301"]
ODD_FLAGS = ["TRUE", " yes", "1", "0", "", None, "False ", "maybe"]


def _money(rng: random.Random, scale: int = 500) -> str:
    cents = rng.randint(-scale, scale * 100) if rng.random() < 0.1 else rng.randint(0, scale * 100)
    return f"{cents / 100:.2f}"


def _unit(rng: random.Random) -> str:
    return f"{rng.randint(0, 999999) / 10_000:.{rng.choice([0, 2, 4])}f}"


def _day(rng: random.Random) -> str:
    day = f"2026-{rng.randint(1, 6):02d}-{rng.randint(1, 28):02d}"
    form = rng.random()
    if form < 0.5:
        return day
    zone = rng.choice(["+00:00", "Z", "-05:00", "+09:00", ""])
    return f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00{zone}"


def _scope(rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    customers = [f"C{i}" for i in range(rng.randint(1, 3))]
    skus = ["SKU-A", "SKU-B", "SKU-C"]
    subs = [f"S{i}" for i in range(rng.randint(0, 3))]
    invoices = [f"INV-{i:06d}" for i in range(rng.randint(0, 5))]
    payments = [f"P{i}" for i in range(rng.randint(0, 7))]
    rate = rng.choice(["0.10", "0.19", "0.075", "0", "0.2"])
    rows: dict[str, list[dict[str, Any]]] = {
        "customers": [{"customer_id": c, "tax_rate": rate,
                       "tax_exempt": rng.choice(["false", "true", "", "1", "0"])}
                      for c in customers],
        "subscriptions": [{"subscription_id": s, "cancelled_at": rng.choice(["", _day(rng)])}
                          for s in subs],
        "price_agreements": [{"customer_id": rng.choice(customers), "sku": rng.choice(skus),
                              "unit_price": _unit(rng), "valid_from": rng.choice(["", _day(rng)]),
                              "valid_to": rng.choice(["", "", _day(rng)])}
                             for _ in range(rng.randint(0, 4))],
        "invoices": [{"invoice_id": i, "customer_id": rng.choice(customers),
                      "subscription_id": rng.choice([*subs, "", "S-gone"]),
                      "issued_at": _day(rng), "period_start": _day(rng),
                      "currency": rng.choice(["USD", "EUR", ""]), "subtotal": _money(rng),
                      "tax": _money(rng, 50), "total": _money(rng)} for i in invoices],
        "invoice_lines": [{"invoice_id": rng.choice([*invoices, "INV-elsewhere"]),
                           "sku": rng.choice(skus), "quantity": str(rng.randint(0, 5)),
                           "unit_price": _unit(rng), "amount": _money(rng)}
                          for _ in range(rng.randint(0, 8))],
        "payments": [{"payment_id": p, "invoice_id": rng.choice([*invoices, "INV-elsewhere"]),
                      "amount": _money(rng)} for p in payments],
        "refunds": [{"payment_id": rng.choice([*payments, "P-gone"]), "amount": _money(rng, 50)}
                    for _ in range(rng.randint(0, 3)) if payments],
        "credits": [{"invoice_id": rng.choice([*invoices, "INV-elsewhere"]),
                     "amount": _money(rng, 30)} for _ in range(rng.randint(0, 2))],
    }
    if rng.random() < 0.35:
        _spoil(rng, rows)
    return rows


def _spoil(rng: random.Random, rows: dict[str, list[dict[str, Any]]]) -> None:
    """One odd cell or one broken key: the direct path must agree or step aside."""
    table = rng.choice([t for t, r in rows.items() if r] or ["customers"])
    if not rows[table]:
        return
    row = rng.choice(rows[table])
    kind = rng.random()
    if kind < 0.15 and len(rows[table]) > 0:
        rows[table].append(dict(row))  # a repeated key (or a repeated line: harmless)
        return
    if kind < 0.25:
        key = next(iter(row))
        row[key] = rng.choice(["", None, "C404"])
        return
    column = rng.choice(list(row))
    if column in ("valid_from", "valid_to", "cancelled_at", "issued_at", "period_start"):
        row[column] = rng.choice(ODD_DATES)
    elif column == "tax_exempt":
        row[column] = rng.choice(ODD_FLAGS)
    elif column in ("tax_rate", "unit_price", "quantity", "amount", "subtotal", "tax", "total"):
        row[column] = rng.choice(ODD_NUMBERS)
    else:
        row[column] = rng.choice(["", None, "X"])


def _frames(rows: dict[str, list[dict[str, Any]]]) -> dict[str, pd.DataFrame]:
    return {name: pd.DataFrame(rows.get(name, []), columns=list(rules.TABLES[name]), dtype=object)
            for name in rules.TABLES}


def _vectorised(tables: dict[str, pd.DataFrame]) -> dict[str, Any] | ValueError:
    try:
        return rules.summarize(rules.reconcile(tables))
    except ValueError as exc:
        return exc


def test_rules_direct_equals_vectorised_on_generated_scopes() -> None:
    rng = random.Random(20261207)
    direct_taken = refused = well_formed = 0
    for case in range(CASES):
        tables = _frames(_scope(rng))
        want = _vectorised(tables)
        got = rules_direct.direct_summary(tables)
        if got is not None:
            direct_taken += 1
            assert not isinstance(want, ValueError), (case, want, tables)
            assert got == want, case
            assert list(got["invoices"]) == list(want["invoices"])  # the same order
        if isinstance(want, ValueError):
            refused += 1
            with pytest.raises(ValueError, match=str(want).split(":")[0]):
                rules_direct.trusted_summary(tables)  # the error message still comes out
        else:
            well_formed += 1
            assert rules_direct.trusted_summary(tables) == want
    assert refused > CASES // 20  # the generator does produce malformed scopes
    print(f"{direct_taken} direct of {well_formed} well-formed, {refused} refused")
    assert direct_taken >= 0.9 * well_formed - 1  # and the direct path takes ordinary ones


def test_rules_direct_takes_every_scope_of_the_sample_data(tmp_path: Any) -> None:
    """The store's scopes (billing.scope_tables over the sample set) are all direct, equal."""
    from sqlalchemy import select

    from billing_recon.store.csv_loader import load_directory
    from billing_recon.store.db import make_engine, migrate, session_factory
    from billing_recon.store.models import Invoice

    sample = generate(tmp_path / "sample", seed=7)
    engine = make_engine(f"sqlite:///{tmp_path}/b.db")
    migrate(engine)
    sessions = session_factory(engine)
    load_directory(sessions, sample.data_dir)
    with sessions() as session:
        owners: dict[str, list[str]] = {}
        for customer_id, invoice_id in session.execute(
                select(Invoice.customer_id, Invoice.invoice_id)):
            owners.setdefault(customer_id, []).append(invoice_id)
        for customer_id, invoice_ids in owners.items():
            tables = billing.scope_tables(session, customer_id, invoice_ids[:3])
            got = rules_direct.direct_summary(tables)
            assert got is not None, customer_id
            assert got == rules.summarize(rules.reconcile(tables))
    engine.dispose()


def test_rules_direct_leaves_large_scopes_to_the_vectorised_rules(monkeypatch: Any) -> None:
    tables = _frames(_scope(random.Random(1)))
    monkeypatch.setattr(rules_direct, "DIRECT_MAX_ROWS", -1)
    monkeypatch.setattr(rules_direct, "direct_summary", lambda _t: pytest.fail("taken"))
    assert rules_direct.trusted_summary(tables) == rules.summarize(rules.reconcile(tables))
