"""The core changes of issue 7, each measured against the code it replaced, side by side.

    python bench/core_changes.py [--tickets 120] [--rounds 4] [--payments 1000000]
                                 [--old-payments 20000] [--invoices 500000] [--json]

1. **pipeline**: the core pipeline (billing_recon.pipeline, no Prefect) over the same sample
   tickets on PostgreSQL in four variants, each on its own copy of the database, interleaved
   in rounds (the order rotates): before (``pool_pre_ping``, the scope read twice), the
   connection check only, the single scope read only, after (both). Seconds, SQL statements
   and pool checkouts per ticket, CPU of this process and of PostgreSQL.
2. **seed**: the first refund client's seeding of the embedded gateway with ``--payments``
   billing payments and one approved ticket: the old eager seed (copied below, run on
   ``--old-payments`` because it takes minutes at a million) against the lazy one.
3. **index**: COPY of ``--invoices`` invoices into the schema before revision 0004 (with
   ix_invoices_customer_id) and after; the index sizes; a customer's invoices looked up.
4. **pool**: the connection pool alone: ``--checkouts`` units of work of one short statement
   each (a session checkout, the statement, the return), pre-ping engine against ours,
   alternating in rounds.

Throw-away PostgreSQL databases (BENCH_PG) are created and dropped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pg  # noqa: E402
import psycopg  # noqa: E402
import world  # noqa: E402
from prefect_server import postgres_cpu, process_tree_cpu  # noqa: E402
from sqlalchemy import Engine, create_engine, event, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from billing_recon import pipeline, runtime  # noqa: E402
from billing_recon.config import Settings  # noqa: E402
from billing_recon.domain.email import parse_email  # noqa: E402
from billing_recon.domain.money import to_minor_units  # noqa: E402
from billing_recon.domain.proposal import CurrencyRefund, PaymentRefund, Policy, Proposal  # noqa: E402
from billing_recon.payments.gateway_store import GatewayStore  # noqa: E402
from billing_recon.steps import reconciliation  # noqa: E402
from billing_recon.steps.deps import Deps  # noqa: E402
from billing_recon.store import tickets  # noqa: E402
from billing_recon.store.csv_loader import load_directory  # noqa: E402
from billing_recon.store.db import _alembic_config, make_engine, migrate, session_factory  # noqa: E402
from billing_recon.store.models import InboundEmail, Payment, Refund, Ticket  # noqa: E402

#: label, old connection pool (pool_pre_ping), old scope reads (twice per ticket)
VARIANTS = (("before: pre-ping, scope read twice", True, True),
            ("(a) connection check only", False, True),
            ("(b) scope read once only", True, False),
            ("after: both", False, False))


# ---------------------------------------------------------------- 1. pipeline


def _engine(url: str, old_pool: bool) -> Engine:
    if old_pool:  # store/db.py before issue 7
        return create_engine(url.replace("postgresql://", "postgresql+psycopg://"),
                             pool_pre_ping=True)
    return make_engine(url)


@dataclasses.dataclass
class _Counts:
    statements: int = 0
    checkouts: int = 0


def _counted(engine: Engine) -> _Counts:
    counts = _Counts()

    def statement(*_: Any) -> None:
        counts.statements += 1

    def checkout(*_: Any) -> None:
        counts.checkouts += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "checkout", checkout)
    return counts


@contextmanager
def _scope_read_twice(old: bool) -> Iterator[None]:
    """Before issue 7, verification read the scope again: analyses hand over no rows."""
    attempt = reconciliation.analysis_attempt
    if old:
        reconciliation.analysis_attempt = (  # type: ignore[assignment]
            lambda *a: dataclasses.replace(attempt(*a), rows=None))
    try:
        yield
    finally:
        reconciliation.analysis_attempt = attempt  # type: ignore[assignment]


def _run_chunk(deps: Deps, old_reads: bool, emails: list[Path]) -> tuple[float, float, float]:
    """Wall, client CPU and PostgreSQL CPU seconds for these emails through the pipeline."""
    wall, cpu, pg_cpu = time.perf_counter(), process_tree_cpu(os.getpid()), postgres_cpu()
    with _scope_read_twice(old_reads):
        for path in emails:
            pipeline.process_email(deps, path.read_bytes(), str(path))
    return (time.perf_counter() - wall, process_tree_cpu(os.getpid()) - cpu,
            postgres_cpu() - pg_cpu)


def pipeline_variants(tickets: int, rounds: int) -> list[dict[str, Any]]:
    """Section 1: the four variants over the same tickets, interleaved in rounds."""
    with tempfile.TemporaryDirectory(prefix="bench-core-") as home:
        sample = world.build(Path(home) / "world", -(-tickets // 18) + 1)
        emails, warmup = sample.emails(tickets), sample.emails()[-1]
        with pg.database("bench_core_template") as template:
            engine = make_engine(pg.url(template))
            migrate(engine)
            load_directory(session_factory(engine), sample.data_dir)
            engine.dispose()
            return _variants(template, emails, warmup, rounds, sample, home)


def _variants(template: str, emails: list[Path], warmup: Path, rounds: int,
              sample: world.World, home: str) -> list[dict[str, Any]]:
    os.environ["BILLING_RECON_HOME"] = str(Path(home) / "billing-home")
    os.environ["BILLING_RECON_LLM"] = "offline"
    base = runtime.build(Settings(database={"url": pg.url(template)}))  # model and sandbox
    base.sessions.kw["bind"].dispose()  # only the copies are used: free the template
    names = [pg.create("bench_core", template) for _ in VARIANTS]
    engines = [_engine(pg.url(n), old) for n, (_, old, _) in zip(names, VARIANTS, strict=True)]
    deps = [dataclasses.replace(base, sessions=session_factory(e)) for e in engines]
    try:
        for d, (_, _, old_reads) in zip(deps, VARIANTS, strict=True):
            _run_chunk(d, old_reads, [warmup])
        counts = [_counted(e) for e in engines]
        totals = [[0.0, 0.0, 0.0] for _ in VARIANTS]
        chunks = [emails[i::rounds] for i in range(rounds)]
        for number, chunk in enumerate(chunks):
            order = list(range(len(VARIANTS)))
            order = order[number % len(order):] + order[:number % len(order)]
            for index in order:
                spent = _run_chunk(deps[index], VARIANTS[index][2], chunk)
                totals[index] = [a + b for a, b in zip(totals[index], spent, strict=True)]
        return _pipeline_rows(totals, counts, emails, deps, sample)
    finally:
        runtime.reset()
        for e in engines:
            e.dispose()
        for n in names:
            pg.drop(n)


def _pipeline_rows(totals: list[list[float]], counts: list[_Counts], emails: list[Path],
                   deps: list[Deps], sample: world.World) -> list[dict[str, Any]]:
    rows, n = [], len(emails)
    for (label, *_), (wall, cpu, pg_cpu), c, d in zip(VARIANTS, totals, counts, deps,
                                                       strict=True):
        rows.append({"variant": label, "s_per_ticket": wall / n, "cpu_per_ticket": cpu / n,
                     "pg_cpu_per_ticket": pg_cpu / n, "statements_per_ticket": c.statements / n,
                     "checkouts_per_ticket": c.checkouts / n,
                     "wrong_outcomes": _wrong(d, sample, emails)})
    return rows


def _wrong(deps: Deps, sample: world.World, emails: list[Path]) -> int:
    """Tickets whose state and reason differ from the ground truth."""
    bad = 0
    for path in emails:
        ticket = tickets.find_by_email(deps.sessions, parse_email(path.read_bytes()).email_id)
        truth = sample.ground_truth[path.name]
        if ticket is None or (ticket.state, ticket.reason) != (truth["expected_state"],
                                                               truth["reason"]):
            bad += 1
    return bad


# ---------------------------------------------------------------- 2. gateway seed


def old_seed_gateway_charges(store: GatewayStore, session: Session) -> int:
    """runtime.seed_gateway_charges before issue 7: every payment, at the first refund."""
    prior: dict[str, Decimal] = {}
    for refund in session.scalars(select(Refund)):
        prior[refund.payment_id] = prior.get(refund.payment_id, Decimal(0)) + refund.amount
    payments = list(session.scalars(select(Payment).where(Payment.charge_ref.is_not(None))))
    for pay in payments:
        refunded = min(prior.get(pay.payment_id, Decimal(0)), pay.amount)
        store.ensure_charge(pay.charge_ref or "", to_minor_units(pay.amount), pay.currency,
                            to_minor_units(refunded))
    return len(payments)


def _approved_ticket(engine: Engine) -> None:
    """One APPROVED ticket refunding two of the loaded payments."""
    pays = [PaymentRefund(payment_id=f"P{i:08d}", invoice_id=f"INV-{i:08d}",
                          charge_ref=f"ch_{i}", amount=Decimal("10.00")) for i in (3, 4)]
    proposal = Proposal(ticket_key="k", customer_id="C0000000", refunds=[CurrencyRefund(
        currency="USD", amount=Decimal("20.00"), invoices={"INV-00000003": Decimal("20.00")},
        reasons=["price_overcharge"], payments=pays)], policy=Policy())
    with session_factory(engine)() as s, s.begin():
        s.add(InboundEmail(email_id="<seed@bench>", source=None, raw="",
                           received_at=datetime.now(UTC)))
        s.flush()
        s.add(Ticket(email_id="<seed@bench>", state="APPROVED", version=1, sender="c0@b",
                     subject="seed", customer_id="C0000000", ticket_key="k",
                     proposal=proposal.model_dump(mode="json"), proposal_hash=proposal.hash()))


def _time_seed(url: str, seed: Callable[[GatewayStore, Session], int]) -> dict[str, float]:
    engine = make_engine(url)
    with tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp:
        store = GatewayStore(f"sqlite:///{tmp}/gateway.db")
        try:
            started = time.perf_counter()
            with session_factory(engine)() as session:
                charges = seed(store, session)
            return {"seconds": time.perf_counter() - started, "charges": charges}
        finally:
            store.close()
            engine.dispose()


def seed(payments: int, old_payments: int) -> dict[str, Any]:
    """Section 2: the old eager seed and the lazy one, each on a loaded database."""
    import retrieval_bench

    out: dict[str, Any] = {}
    for label, count, functions in (
            ("old_payments", old_payments,
             {"old": old_seed_gateway_charges, "new": runtime.seed_gateway_charges}),
            ("payments", payments, {"new": runtime.seed_gateway_charges})):
        with pg.database("bench_seed") as name:
            engine = make_engine(pg.url(name))
            migrate(engine)
            retrieval_bench.load(pg.url(name, "postgresql"), count, max(1, count // 10))
            _approved_ticket(engine)
            engine.dispose()
            out[label] = {"payments": count, **{k: _time_seed(pg.url(name), f)
                                                for k, f in functions.items()}}
    return out


# ---------------------------------------------------------------- 3. invoice index


def _copy_invoices(url: str, invoices: int) -> float:
    rows = "".join(f"C{i % 1000:07d}\tCustomer\tc{i}@b.example\tUSD\t0.2\tf\n"
                   for i in range(1000))
    with psycopg.connect(url) as conn:
        with conn.cursor().copy("COPY customers (customer_id, name, email, currency, "
                                "tax_rate, tax_exempt) FROM STDIN") as copy:
            copy.write(rows)
        conn.commit()
        data = "".join(f"INV-{i:08d}\tC{i % 1000:07d}\t2026-{i % 12 + 1:02d}-01 08:00:00+00\t"
                       "USD\t100.00\t20.00\t120.00\n" for i in range(invoices))
        started = time.perf_counter()
        with conn.cursor().copy("COPY invoices (invoice_id, customer_id, issued_at, currency, "
                                "subtotal, tax, total) FROM STDIN") as copy:
            copy.write(data)
        conn.commit()
        return time.perf_counter() - started


def _index_sizes(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT indexname, pg_relation_size(indexname::regclass) FROM "
                            "pg_indexes WHERE tablename = 'invoices'").fetchall()
    return {str(name): int(size) for name, size in rows}


def _lookups(url: str, count: int = 500) -> float:
    """p50 ms of a customer's invoices, as retrieval asks for them."""
    times = []
    with psycopg.connect(url) as conn:
        conn.execute("ANALYZE invoices")
        for i in range(count):
            started = time.perf_counter()
            conn.execute("SELECT * FROM invoices WHERE customer_id = %s ORDER BY invoice_id",
                         (f"C{i * 7 % 1000:07d}",)).fetchall()
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


@contextmanager
def _schema(revision: str) -> Iterator[str]:
    with pg.database("bench_index") as name:
        engine = make_engine(pg.url(name))
        from alembic import command

        command.upgrade(_alembic_config(engine), revision)
        engine.dispose()
        yield pg.url(name, "postgresql")


def index(invoices: int, repeats: int = 2) -> dict[str, Any]:
    """Section 3: COPY into invoices with and without the redundant index, alternating."""
    out: dict[str, Any] = {"invoices": invoices}
    for number in range(repeats):
        for label, revision in (("with_ix_customer_id", "0003"), ("without", "head"))[
                ::1 if number % 2 == 0 else -1]:
            with _schema(revision) as url:
                seconds = _copy_invoices(url, invoices)
                entry = out.setdefault(label, {"copy_s": [], "lookup_p50_ms": []})
                entry["copy_s"].append(seconds)
                entry["lookup_p50_ms"].append(_lookups(url))
                entry["index_bytes"] = _index_sizes(url)
    return out


# ---------------------------------------------------------------- 4. pool


def _units(engine: Engine, count: int) -> tuple[float, float, float]:
    """Wall, client CPU and PostgreSQL CPU seconds per unit of work (checkout, one statement,
    return)."""
    factory = session_factory(engine)
    wall, cpu, pg_cpu = time.perf_counter(), process_tree_cpu(os.getpid()), postgres_cpu()
    for _ in range(count):
        with factory() as session:
            session.execute(select(Ticket.id).where(Ticket.id == 1)).first()
    return ((time.perf_counter() - wall) / count,
            (process_tree_cpu(os.getpid()) - cpu) / count, (postgres_cpu() - pg_cpu) / count)


def pool(checkouts: int, rounds: int = 6) -> dict[str, Any]:
    """Section 4: pre-ping against the idle-connection check, alternating."""
    out: dict[str, Any] = {"checkouts": checkouts}
    with pg.database("bench_pool") as name:
        engine = make_engine(pg.url(name))
        migrate(engine)
        engine.dispose()
        engines = {"pre_ping": _engine(pg.url(name), True), "check": _engine(pg.url(name), False)}
        try:
            for number in range(rounds):
                for label in (("pre_ping", "check") if number % 2 == 0 else ("check", "pre_ping")):
                    spent = _units(engines[label], checkouts // rounds)
                    entry = out.setdefault(label, {"us_per_unit": [], "cpu_us_per_unit": [],
                                                   "pg_cpu_us_per_unit": []})
                    for key, value in zip(entry, spent, strict=True):
                        entry[key].append(value * 1e6)
        finally:
            for e in engines.values():
                e.dispose()
    for label in ("pre_ping", "check"):
        out[label]["medians_us"] = {k: statistics.median(v) for k, v in out[label].items()}
    return out


# ---------------------------------------------------------------- the command


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tickets", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--old-payments", type=int, default=20_000)
    parser.add_argument("--invoices", type=int, default=500_000)
    parser.add_argument("--checkouts", type=int, default=12_000)
    parser.add_argument("--only", default="1,2,3,4")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    only = set(args.only.split(","))
    result: dict[str, Any] = {"load_average": os.getloadavg()}
    if "1" in only:
        result["pipeline"] = pipeline_variants(args.tickets, args.rounds)
    if "2" in only:
        result["seed"] = seed(args.payments, args.old_payments)
    if "3" in only:
        result["index"] = index(args.invoices)
    if "4" in only:
        result["pool"] = pool(args.checkouts)
    result["load_average_end"] = os.getloadavg()
    print(json.dumps(result, indent=None if args.json else 1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
