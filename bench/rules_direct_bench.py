"""The trusted rules' summary for scopes of growing size: vectorised against direct, one run.

    python bench/rules_direct_bench.py [--sizes 1,3,10,100,300,1000,3000]

Each scope is one customer with N invoices of two lines each, one payment each and a price
agreement that lowers every line (so every invoice is refundable, price_overcharge). Both paths
run on the same DataFrames and must give the same summary; the table prints the median of
several repeats of each and their ratio. ``rules_direct.DIRECT_MAX_ROWS`` is set below the
crossover this prints.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from billing_recon.domain import rules, rules_direct


def scope(invoices: int) -> dict[str, pd.DataFrame]:
    """One customer's scope of ``invoices`` invoices (6 + 4 * (invoices - 1) rows in all)."""
    ids = [f"INV-{i:06d}" for i in range(invoices)]
    return {
        "customers": pd.DataFrame({"customer_id": ["C1"], "tax_rate": ["0.10"],
                                   "tax_exempt": ["false"]}),
        "price_agreements": pd.DataFrame({"customer_id": ["C1"], "sku": ["A"],
                                          "unit_price": ["45.00"], "valid_from": ["2026-01-01"],
                                          "valid_to": [""]}),
        "invoices": pd.DataFrame({"invoice_id": ids, "customer_id": "C1", "subscription_id": "",
                                  "issued_at": "2026-03-01T10:00:00+00:00",
                                  "period_start": "2026-03-01", "currency": "USD",
                                  "subtotal": "100.00", "tax": "10.00", "total": "110.00"}),
        "invoice_lines": pd.DataFrame({"invoice_id": ids * 2, "sku": "A", "quantity": "1",
                                       "unit_price": "50.00", "amount": "50.00"}),
        "payments": pd.DataFrame({"payment_id": [f"P{i}" for i in range(invoices)],
                                  "invoice_id": ids, "amount": "110.00"}),
    }


def _median_ms(call: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,3,10,100,300,1000,3000")
    args = parser.parse_args()
    print(f"{'invoices':>8} {'rows':>6} {'vectorised ms':>14} {'direct ms':>10} {'ratio':>7}")
    for size in (int(s) for s in args.sizes.split(",")):
        tables = scope(size)
        direct = rules_direct.direct_summary(tables)
        assert direct is not None and direct == rules.summarize(rules.reconcile(tables))
        repeats = max(5, 300 // size)
        vectorised_ms = _median_ms(lambda t=tables: rules.summarize(rules.reconcile(t)), repeats)
        direct_ms = _median_ms(lambda t=tables: rules_direct.direct_summary(t), repeats)
        rows = sum(len(frame) for frame in tables.values())
        print(f"{size:>8} {rows:>6} {vectorised_ms:>14.2f} {direct_ms:>10.2f} "
              f"{vectorised_ms / direct_ms:>6.1f}x")
    print(f"direct up to DIRECT_MAX_ROWS = {rules_direct.DIRECT_MAX_ROWS} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
