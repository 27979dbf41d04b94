"""The sandbox's input files: pandas' to_csv per frame (before) vs to_csv_files, side by side.

    python bench/csv_files_bench.py [--repeat 20]

Frames shaped like store.billing.scope_tables' (eight tables of text), for a typical scope
(three invoices, a handful of rows per table) and for 10,000 invoice lines. The bytes are
checked equal. Prints milliseconds per scope (best of five batches); it is not a timed test.
"""

from __future__ import annotations

import argparse
import io
import sys
import timeit
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sandbox_bench import invoice_files

from billing_recon.store import billing


def _pandas(tables: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    """What to_csv_files did before: pandas' to_csv for every frame."""
    out = {}
    for name, frame in tables.items():
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        out[f"{name}.csv"] = buffer.getvalue().encode()
    return out


def _tables(lines: int) -> dict[str, pd.DataFrame]:
    files = invoice_files(lines, 10)
    tables = {name: pd.read_csv(io.BytesIO(files.get(f"{name}.csv", b"")), dtype=str,
                                keep_default_na=False).reindex(columns=columns).fillna("")
              if f"{name}.csv" in files else pd.DataFrame([], columns=columns, dtype=object)
              for name, columns in billing.COLUMNS.items()}
    return {name: frame.astype(object) for name, frame in tables.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"{'scope':<26} {'pandas to_csv ms':>17} {'to_csv_files ms':>16} {'ratio':>7}")
    for label, lines in (("3 invoices (30 lines)", 30), ("10,000 invoice lines", 10_000)):
        tables = _tables(lines)
        if billing.to_csv_files(tables) != _pandas(tables):
            raise SystemExit("the bytes differ")
        before = min(timeit.repeat(lambda t=tables: _pandas(t), number=args.repeat,
                                   repeat=5)) / args.repeat * 1000
        after = min(timeit.repeat(lambda t=tables: billing.to_csv_files(t), number=args.repeat,
                                  repeat=5)) / args.repeat * 1000
        print(f"{label:<26} {before:>17.3f} {after:>16.3f} {before / after:>6.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
