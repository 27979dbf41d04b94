"""Cold versus warm sandbox runs of the reconciliation script (rules.py), side by side.

    python bench/sandbox_bench.py [--lines 10000] [--per-invoice 10] [--cold 10] [--warm 30]

Cold: a fresh bubblewrap jail per run (jail set-up, interpreter start, pandas import, the
script, tear-down). Warm: the default pool, where a run is a fork of a worker that has pandas
imported. Both run rules.py over the same generated invoice data; the first warm run (the
worker's start) is not counted. A trivial pandas script is timed the same way, to show the
sandbox's own overhead apart from the script's work. Prints numbers; it is not a timed test.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from billing_recon.domain import rules
from billing_recon.sandbox.bwrap import Jail, probe
from billing_recon.sandbox.local import WarmPool
from billing_recon.sandbox.port import Sandbox

TRIVIAL = "import pandas as pd\nprint(len(pd.DataFrame({'a': [1, 2]})))\n"


def _csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def invoice_files(lines: int, per_invoice: int, seed: int = 7) -> dict[str, bytes]:
    """SPEC §3 CSV files with `lines` invoice lines, some over-priced, some paid twice."""
    rng = random.Random(seed)
    customers = [(f"C{i:03d}", f"Customer {i}", f"c{i}@example.com", "USD", "0.20", "false")
                 for i in range(20)]
    invoices, items, payments = [], [], []
    for n in range(lines // per_invoice):
        invoice, customer = f"INV-{n:06d}", customers[n % len(customers)][0]
        cents = [rng.randint(1, 9) * rng.randint(100, 9_999) for _ in range(per_invoice)]
        items += [(f"L{n}-{j}", invoice, f"SKU-{j % 5}", "item", "1", f"{c / 100:.2f}",
                   f"{c / 100:.2f}") for j, c in enumerate(cents)]
        subtotal = sum(cents)
        tax = round(subtotal * 0.2)
        invoices.append((invoice, customer, "", "2026-03-01", "2026-03-01", "2026-03-31", "USD",
                         f"{subtotal / 100:.2f}", f"{tax / 100:.2f}",
                         f"{(subtotal + tax) / 100:.2f}"))
        for k in range(1 + (n % 17 == 0)):  # every 17th invoice was paid twice
            payments.append((f"PAY-{n}-{k}", invoice, customer, f"{(subtotal + tax) / 100:.2f}",
                             "USD", "2026-03-02T09:00:00+00:00", f"ch_{n}_{k}"))
    agreements = [(c[0], "SKU-1", "10.00", "2026-01-01", "") for c in customers[::3]]
    return {
        "customers.csv": _csv(("customer_id", "name", "email", "currency", "tax_rate",
                               "tax_exempt"), customers),
        "price_agreements.csv": _csv(("customer_id", "sku", "unit_price", "valid_from",
                                      "valid_to"), agreements),
        "invoices.csv": _csv(("invoice_id", "customer_id", "subscription_id", "issued_at",
                              "period_start", "period_end", "currency", "subtotal", "tax",
                              "total"), invoices),
        "invoice_lines.csv": _csv(("line_id", "invoice_id", "sku", "description", "quantity",
                                   "unit_price", "amount"), items),
        "payments.csv": _csv(("payment_id", "invoice_id", "customer_id", "amount", "currency",
                              "paid_at", "charge_ref"), payments),
    }


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def timed_runs(box: Sandbox, code: str, files: dict[str, bytes], runs: int,
               check: Callable[[str], None]) -> list[float]:
    """Wall-clock seconds of `runs` calls of box.run, each checked."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        result = box.run(code, files)
        samples.append(time.perf_counter() - start)
        if not result.ok:
            raise SystemExit(f"sandbox run failed: {result.error} {result.stderr[-500:]}")
        check(result.stdout)
    return samples


def compare(jail: Jail, label: str, code: str, files: dict[str, bytes], cold_runs: int,
            warm_runs: int, check: Callable[[str], None]) -> float:
    """Print cold and warm p50/p95 for one script; return the p50 ratio."""
    cold_pool = WarmPool(jail, workers=1, jobs_per_worker=1)  # a fresh jail for every run
    warm_pool = WarmPool(jail, workers=1)
    try:
        cold = timed_runs(cold_pool, code, files, cold_runs, check)
        timed_runs(warm_pool, code, files, 1, check)  # the worker's start is not a warm run
        warm = timed_runs(warm_pool, code, files, warm_runs, check)
    finally:
        cold_pool.close()
        warm_pool.close()
    ratio = percentile(cold, 0.5) / percentile(warm, 0.5)
    print(f"\n{label}")
    print(f"  {'':28} {'runs':>5} {'p50 ms':>9} {'p95 ms':>9}")
    for name, samples in (("cold (new jail per run)", cold), ("warm (pool, fork per run)", warm)):
        print(f"  {name:28} {len(samples):5d} {percentile(samples, 0.5) * 1000:9.1f} "
              f"{percentile(samples, 0.95) * 1000:9.1f}")
    print(f"  warm p50 is {ratio:.1f}x faster than cold p50")
    return ratio


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", type=int, default=10_000, help="invoice lines (10000)")
    parser.add_argument("--per-invoice", type=int, default=10, help="lines per invoice (10)")
    parser.add_argument("--cold", type=int, default=10, help="cold runs (10)")
    parser.add_argument("--warm", type=int, default=30, help="warm runs (30)")
    args = parser.parse_args(argv)
    jail = Jail.for_this_python()
    if (reason := probe(jail)) is not None:
        print(f"bubblewrap cannot run here: {reason}", file=sys.stderr)
        return 1
    files = invoice_files(args.lines, args.per_invoice)
    with tempfile.TemporaryDirectory() as data_dir:
        for name, data in files.items():
            Path(data_dir, name).write_bytes(data)
        expected = rules.summarize(rules.reconcile(rules.load_tables(data_dir)))

    def same_as_trusted(stdout: str) -> None:
        if json.loads(stdout) != json.loads(json.dumps(expected)):
            raise SystemExit("the sandboxed rules.py disagrees with the trusted rules")

    print(f"sandbox benchmark: isolation {WarmPool.isolation}, python {sys.version.split()[0]}")
    compare(jail, f"rules.py over {args.lines:,} invoice lines "
            f"({args.lines // args.per_invoice:,} invoices)",
            Path(rules.__file__).read_text(encoding="utf-8"), files, args.cold, args.warm,
            same_as_trusted)
    compare(jail, "trivial pandas script (the sandbox's own overhead)", TRIVIAL, {},
            args.cold, args.warm, lambda out: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
