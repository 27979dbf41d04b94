"""Retrieval at scale: fetch_invoices and scope_tables over a big billing database in PostgreSQL.

    python bench/retrieval_bench.py [--invoices 1000000] [--customers 100000] [--tickets 300]

Creates a throw-away PostgreSQL database with the project's schema (Alembic, all revisions),
bulk-loads it with COPY (10 invoices per customer by default, 1 line and 1 payment per
invoice, some credits, refunds and price agreements), runs ANALYZE, then takes ``--tickets``
tickets (half naming invoice ids, half naming none, i.e. every invoice of the customer) from
TRIAGED through the real ``retrieval.fetch_invoices`` step, and reads each scope with
``billing.scope_tables``. Prints p50/p95 of both and EXPLAIN (ANALYZE) of every statement
they issue, so the plan shows which index serves each query.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pg

from billing_recon.config import Settings
from billing_recon.domain.email import parse_email
from billing_recon.domain.fsm import State
from billing_recon.steps import retrieval
from billing_recon.steps.deps import Deps
from billing_recon.store import billing, inbox, tickets
from billing_recon.store.db import make_engine, migrate

ACTOR = "bench"
LINES_PER_INVOICE = 1


def _copy(conn: psycopg.Connection[Any], table: str, columns: str, rows: Iterator[str]) -> None:
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for n, row in enumerate(rows, 1):
            buffer.write(row)
            if n % 100_000 == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def _money(rng: random.Random) -> str:
    return f"{rng.randint(100, 99_999) // 100}.{rng.randint(0, 99):02d}"


def load(url: str, invoices: int, customers: int, seed: int = 7) -> dict[str, int]:
    """Bulk-load the billing tables; secondary indexes are dropped first and rebuilt after."""
    rng = random.Random(seed)
    per = max(1, invoices // customers)
    with psycopg.connect(url) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND "
            "tablename IN ('customers','subscriptions','price_agreements','invoices',"
            "'invoice_lines','payments','refunds','credits') AND indexname LIKE 'ix_%'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        _copy(conn, "customers", "customer_id, name, email, currency, tax_rate, tax_exempt",
              (f"C{c:07d}\tCustomer {c}\tc{c}@bench.example\tUSD\t0.200000\t"
               f"{'t' if c % 20 == 0 else 'f'}\n" for c in range(customers)))
        _copy(conn, "subscriptions", "subscription_id, customer_id, sku, started_at, "
              "cancelled_at",
              (f"S{c:07d}\tC{c:07d}\tPLAN\t2025-01-01 00:00:00+00\t"
               f"{'2026-03-01 12:00:00+00' if c % 30 == 0 else chr(92) + 'N'}\n"
               for c in range(customers)))
        _copy(conn, "price_agreements", "customer_id, sku, unit_price, valid_from, valid_to",
              (f"C{c:07d}\tSKU-1\t8.0000\t2026-01-01\t\\N\n" for c in range(0, customers, 10)))
        _copy(conn, "invoices", "invoice_id, customer_id, subscription_id, issued_at, "
              "period_start, period_end, currency, subtotal, tax, total",
              (f"INV-{i:08d}\tC{i // per % customers:07d}\tS{i // per % customers:07d}\t"
               f"2026-{i % 6 + 1:02d}-01 08:00:00+00\t2026-{i % 6 + 1:02d}-01\t"
               f"2026-{i % 6 + 1:02d}-28\tUSD\t100.00\t20.00\t120.00\n"
               for i in range(invoices)))
        _copy(conn, "invoice_lines", "line_id, invoice_id, sku, description, quantity, "
              "unit_price, amount",
              (f"L{i:08d}-{k}\tINV-{i:08d}\tSKU-{k}\titem\t1\t50.00\t50.00\n"
               for i in range(invoices) for k in range(LINES_PER_INVOICE)))
        _copy(conn, "payments", "payment_id, invoice_id, customer_id, amount, currency, "
              "paid_at, charge_ref",
              (f"P{i:08d}\tINV-{i:08d}\tC{i // per % customers:07d}\t120.00\tUSD\t"
               f"2026-07-01 09:00:00+00\tch_{i}\n" for i in range(invoices)))
        _copy(conn, "credits", "credit_id, customer_id, invoice_id, amount, currency, issued_at",
              (f"CN{i:08d}\tC{i // per % customers:07d}\tINV-{i:08d}\t{_money(rng)}\tUSD\t"
               f"2026-07-02 09:00:00+00\n" for i in range(0, invoices, 50)))
        _copy(conn, "refunds", "refund_id, payment_id, amount, currency, refunded_at",
              (f"R{i:08d}\tP{i:08d}\t10.00\tUSD\t2026-07-03 09:00:00+00\n"
               for i in range(0, invoices, 100)))
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute("ANALYZE")
        conn.commit()
    return {"customers": customers, "invoices": invoices,
            "invoice_lines": invoices * LINES_PER_INVOICE, "payments": invoices}


def _email(number: int, customer: int, invoice_ids: list[str]) -> bytes:
    subject = f"Overcharge on {', '.join(invoice_ids)}" if invoice_ids else "Please check"
    return (f"From: Customer <c{customer}@bench.example>\r\nTo: billing@recon.example\r\n"
            f"Subject: {subject}\r\nMessage-ID: <bench-{number}@bench.example>\r\n"
            f"Date: Fri, 20 Mar 2026 09:00:00 +0000\r\n\r\nPlease check.\r\n").encode()


def triaged_tickets(deps: Deps, count: int, invoices: int, customers: int,
                    seed: int = 11) -> list[int]:
    """Tickets in TRIAGED for random customers; every other one names two of its invoices."""
    rng = random.Random(seed)
    per = max(1, invoices // customers)
    out = []
    for n in range(count):
        customer = rng.randrange(customers)
        named = ([f"INV-{customer * per + k:08d}" for k in rng.sample(range(per), 2)]
                 if n % 2 == 0 else [])
        opened = inbox.open_ticket(deps.sessions, parse_email(_email(n, customer, named)),
                                   None)
        tickets.transition(deps.sessions, opened.ticket.id, State.TRIAGED, actor=ACTOR,
                           fields={"triage": {"invoice_ids": named}}, expect=State.RECEIVED)
        out.append(opened.ticket.id)
    return out


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every SELECT the engine runs meanwhile, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def listen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def explain(engine: Engine, statements: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE of each distinct statement: its plan lines and the indexes it used."""
    plans, done = [], set()
    with engine.connect() as conn:
        for statement, parameters in statements:
            if statement in done:
                continue
            done.add(statement)
            raw = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {statement}",
                                       parameters)
            lines = [row[0] for row in raw]
            used = sorted({word for line in lines for word in line.split()
                           if word.startswith(("ix_", "pk_", "uq_"))})
            seq = [line.strip() for line in lines if "Seq Scan" in line]
            forced: list[str] = []
            if seq:  # is there an index the planner passed over (a small table), or none?
                conn.exec_driver_sql("SET enable_seqscan = off")
                again = [row[0] for row in conn.exec_driver_sql(
                    f"EXPLAIN (COSTS OFF) {statement}", parameters)]
                conn.exec_driver_sql("SET enable_seqscan = on")
                forced = sorted({word for line in again for word in line.split()
                                 if word.startswith(("ix_", "pk_", "uq_"))})
            found = re.search(r"\bFROM\s+(\w+)", statement)
            table = found.group(1) if found else "?"
            plans.append({"table": table, "indexes": used, "seq_scans": seq, "forced": forced,
                          "plan": lines})
        conn.rollback()
    return plans


def measure(deps: Deps, engine: Engine, ids: list[int], explained: list[int]
            ) -> dict[str, Any]:
    """Time fetch_invoices and scope_tables per ticket; explain the statements of one each."""
    fetch, scope = [], []
    for tid in ids:
        start = time.perf_counter()
        ticket = retrieval.fetch_invoices(deps, tid, ACTOR)
        fetch.append(time.perf_counter() - start)
        if ticket.state != State.DATA_FETCHED.value:
            raise RuntimeError(f"ticket {tid} ended {ticket.state}({ticket.reason})")
        start = time.perf_counter()
        with deps.sessions() as session:
            billing.scope_tables(session, ticket.scope["customer_id"],
                                 ticket.scope["invoice_ids"])
        scope.append(time.perf_counter() - start)
    with engine.begin() as conn:  # fresh statistics for the ticket tables written meanwhile
        conn.exec_driver_sql("ANALYZE tickets, ticket_keys, ticket_events")
    plans = []
    for tid in explained:  # one naming ids, one naming none: both scope shapes
        with captured(engine) as statements:
            ticket = retrieval.fetch_invoices(deps, tid, ACTOR)
            with deps.sessions() as session:
                billing.scope_tables(session, ticket.scope["customer_id"],
                                     ticket.scope["invoice_ids"])
        plans += explain(engine, statements)
    return {"fetch_p50_ms": percentile(fetch, 0.5) * 1000,
            "fetch_p95_ms": percentile(fetch, 0.95) * 1000,
            "scope_p50_ms": percentile(scope, 0.5) * 1000,
            "scope_p95_ms": percentile(scope, 0.95) * 1000,
            "fetch_mean_ms": statistics.mean(fetch) * 1000, "tickets": len(ids),
            "plans": plans}


def run(invoices: int, customers: int, count: int) -> dict[str, Any]:
    """Create, load, measure and drop a benchmark database."""
    with pg.database("bench_retrieval") as name:
        engine = make_engine(pg.url(name))
        migrate(engine)
        started = time.perf_counter()
        sizes = load(pg.url(name, "postgresql"), invoices, customers)
        load_s = time.perf_counter() - started
        from billing_recon import runtime

        settings = Settings(database={"url": pg.url(name)})
        deps = runtime.build(settings)
        try:
            ids = triaged_tickets(deps, count + 2, invoices, customers)
            result = measure(deps, deps.sessions.kw["bind"], ids[:-2], ids[-2:])
        finally:
            runtime.reset()
            engine.dispose()
            deps.sessions.kw["bind"].dispose()
        return {**sizes, "load_s": load_s, **result}


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--tickets", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args()
    result = run(args.invoices, args.customers, args.tickets)
    if args.json:
        print(json.dumps(result))
        return 0
    for key, value in result.items():
        if key != "plans":
            print(f"{key:16} {value:,.2f}" if isinstance(value, float) else f"{key:16} {value}")
    for plan in result["plans"]:
        forced = f" (index {', '.join(plan['forced'])} when seq scans are off)"
        print(f"\n{plan['table']}: indexes {', '.join(plan['indexes']) or '-'}"
              f"{'  SEQ SCAN' if plan['seq_scans'] else ''}"
              f"{forced if plan['forced'] else ''}")
        print("\n".join("    " + line for line in plan["plan"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
