"""Read sessions on PostgreSQL: in autocommit (as shipped) against in a transaction (before).

    python bench/read_sessions.py [--tickets 216] [--chunk 9]

One process, the core pipeline (no Prefect) over the replicated sample world, each variant on
its own billing database on PostgreSQL: ``store.db.session_factory`` (reads outside ``begin()``
in autocommit) and a plain ``sessionmaker`` (each read session a BEGIN, its statements and a
ROLLBACK, as before). The tickets are taken in chunks; each chunk runs on both variants, in
alternating order, so both see the same tickets in the same order and the same load. Prints
wall and CPU milliseconds per ticket, read sessions per ticket (each two round trips fewer in
autocommit) and how many tickets ended as the ground truth says. Prints numbers; it is not a
timed test.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pg  # noqa: E402
import world  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=216)
    parser.add_argument("--chunk", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-read-sessions-") as tmp, \
            pg.database("bench_reads_a") as shipped_db, pg.database("bench_reads_b") as before_db:
        sample = world.build(Path(tmp) / "world", -(-args.tickets // 18) + 1)
        os.environ["BILLING_RECON_HOME"] = tmp
        os.chdir(tmp)
        from sqlalchemy import event
        from sqlalchemy.orm import Session, SessionTransactionOrigin, sessionmaker

        from billing_recon import ground_truth, pipeline, runtime
        from billing_recon.config import load
        from billing_recon.store.csv_loader import load_directory

        reads = [0]

        def read_session(_session: Session, transaction: object, _connection: object) -> None:
            if getattr(transaction, "origin", None) is SessionTransactionOrigin.AUTOBEGIN:
                reads[0] += 1

        event.listen(Session, "after_begin", read_session)
        variants = {}
        for label, name in (("autocommit (shipped)", shipped_db),
                            ("in a transaction (before)", before_db)):
            os.environ["BILLING_RECON_DATABASE_URL"] = pg.url(name)
            deps = runtime.build(load())
            if name == before_db:
                deps = dataclasses.replace(deps, sessions=sessionmaker(
                    deps.sessions.kw["bind"], expire_on_commit=False))
            load_directory(deps.sessions, sample.data_dir)
            pipeline.process_email(deps, sample.emails()[-1].read_bytes(), "warm-up")
            variants[label] = deps
        totals = {label: [0.0, 0.0, 0, 0, 0] for label in variants}  # wall, cpu, n, right, reads
        emails = sample.emails(args.tickets)
        for start in range(0, len(emails), args.chunk):
            chunk = emails[start:start + args.chunk]
            order = list(variants)
            if (start // args.chunk) % 2:
                order.reverse()
            for label in order:
                reads[0] = 0
                wall, cpu = time.perf_counter(), time.process_time()
                ended = [pipeline.process_email(variants[label], p.read_bytes(), str(p))
                         for p in chunk]
                spent = totals[label]
                spent[0] += time.perf_counter() - wall
                spent[1] += time.process_time() - cpu
                spent[2] += len(chunk)
                spent[3] += sum(ground_truth.matches(sample.ground_truth[p.name], t)
                                for p, t in zip(chunk, ended, strict=True))
                spent[4] += reads[0]
    print(f"core pipeline on PostgreSQL, {args.tickets} tickets in chunks of {args.chunk}, "
          f"each chunk on both; load average {os.getloadavg()[0]:.1f}")
    print(f"{'read sessions':<26} {'wall ms/ticket':>15} {'CPU ms/ticket':>14} "
          f"{'read sessions/ticket':>21} {'right':>9}")
    for label, (wall, cpu, n, right, read) in totals.items():
        print(f"{label:<26} {wall / n * 1000:>15.1f} {cpu / n * 1000:>14.1f} {read / n:>21.1f} "
              f"{right:>5}/{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
