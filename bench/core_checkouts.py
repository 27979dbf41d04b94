"""The core pipeline (no Prefect) of several checkouts, side by side, interleaved in rounds.

    python bench/core_checkouts.py main HEAD [--tickets 108] [--rounds 3] [--pg]

Each checkout (a directory, or a git ref exported with ``git archive``) runs its own code with
this virtualenv (bench/checkouts.py) in a child process: the same replicated sample world, a
fresh billing database per round (SQLite in a temporary folder, or a throw-away PostgreSQL
database with ``--pg``), one warm-up email, then ``--tickets`` emails through
``billing_recon.pipeline.process_email``. Rounds alternate the checkouts so both see the same
load. Prints wall and CPU milliseconds per ticket, SQL statements and commits per ticket and
how many tickets ended as the ground truth says, per checkout (median of the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import checkouts  # noqa: E402
import pg  # noqa: E402
import world  # noqa: E402

CHILD = r"""
import json, os, sys, time
from pathlib import Path
from sqlalchemy import event
from billing_recon import ground_truth, pipeline, runtime
from billing_recon.config import load
from billing_recon.store.csv_loader import load_directory
sys.path.insert(0, sys.argv[1])
import world as w
sample = w.World(Path(sys.argv[2]), Path(sys.argv[3]), json.loads(Path(sys.argv[4]).read_text()))
emails = sample.emails(int(sys.argv[5]))
deps = runtime.build(load())
load_directory(deps.sessions, sample.data_dir)
count = [0, 0]
def counted(*_):
    count[0] += 1
def committed(*_):
    count[1] += 1
event.listen(deps.sessions.kw["bind"], "before_cursor_execute", counted)
event.listen(deps.sessions.kw["bind"], "commit", committed)
pipeline.process_email(deps, sample.emails()[-1].read_bytes(), "warm-up")
count[0] = count[1] = 0
wall, cpu = time.perf_counter(), time.process_time()
ended = [pipeline.process_email(deps, p.read_bytes(), str(p)) for p in emails]
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
right = sum(ground_truth.matches(sample.ground_truth[p.name], t) for p, t in zip(emails, ended))
print(json.dumps({"wall": wall, "cpu": cpu, "statements": count[0], "commits": count[1],
                  "right": right,
                  "n": len(emails)}))
"""


def _once(links: Path, sample: world.World, truth: Path, tickets: int, db_url: str,
          home: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BILLING_RECON_", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(links), BILLING_RECON_DATABASE_URL=db_url,
               BILLING_RECON_HOME=str(home))
    out = subprocess.run([sys.executable, "-c", CHILD, str(HERE), str(sample.data_dir),
                          str(sample.inbox_dir), str(truth), str(tickets)], env=env,
                         capture_output=True, text=True, cwd=home)
    if out.returncode != 0:
        raise SystemExit(f"a run failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", help="checkouts: directories or git refs")
    parser.add_argument("--tickets", type=int, default=108)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-core-checkouts-") as tmp:
        scratch = Path(tmp)
        sample = world.build(scratch / "world", -(-args.tickets // 18) + 1)
        truth = scratch / "world" / "ground_truth.json"
        links = {}
        for i, spec in enumerate(args.specs):
            folder = scratch / f"variant{i}"
            folder.mkdir()
            links[spec] = checkouts.package_links(checkouts.tree_of(spec, folder), folder)
        results: dict[str, list[dict[str, Any]]] = {spec: [] for spec in args.specs}
        for round_ in range(args.rounds):
            order = args.specs if round_ % 2 == 0 else list(reversed(args.specs))
            for spec in order:
                home = scratch / f"home-{round_}-{args.specs.index(spec)}"
                home.mkdir()
                if args.pg:
                    with pg.database(f"bench_core_ck_{round_}") as name:
                        results[spec].append(_once(links[spec], sample, truth, args.tickets,
                                                   pg.url(name), home))
                else:
                    results[spec].append(_once(links[spec], sample, truth, args.tickets,
                                               f"sqlite:///{home}/billing.db", home))
    print(f"core pipeline, {args.tickets} tickets, {args.rounds} rounds, "
          f"{'PostgreSQL' if args.pg else 'SQLite'}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'checkout':<12} {'wall ms/ticket':>15} {'CPU ms/ticket':>14} "
          f"{'statements/ticket':>18} {'commits/ticket':>15} {'right':>7}")
    for spec, runs in results.items():
        n = runs[0]["n"]
        wall = statistics.median(r["wall"] for r in runs) / n * 1000
        cpu = statistics.median(r["cpu"] for r in runs) / n * 1000
        print(f"{spec:<12} {wall:>15.1f} {cpu:>14.1f} {runs[0]['statements'] / n:>18.1f} "
              f"{runs[0]['commits'] / n:>15.1f} {min(r['right'] for r in runs):>4}/{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
