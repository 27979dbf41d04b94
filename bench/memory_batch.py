"""Issue 19, goal 5: does one long batch run in bounded memory? Peak RSS of the batch's client
and of the Prefect server at checkpoints of the same run.

    python bench/memory_batch.py                     # 10,000 tickets: peaks at 1,000 and 10,000
    python bench/memory_batch.py --quick             # 1,000 tickets: peaks at 100 and 1,000
    python bench/memory_batch.py --checkpoints 50,300 --env BILLING_RECON_BATCH_IN_FLIGHT=4
    python bench/memory_batch.py --checkpoints 50,300 --tracemalloc   # where the client grew
    python bench/memory_batch.py --json              # one JSON object instead of the table

One reconcile-inbox run as shipped, as section 2 of bench/run.py runs it: bench/ticket_runner.py
mode ``batch`` (the flow over the given emails, approval_wait_s=0, after one warm-up email) over
emails that all reach APPROVAL_PENDING, on a copy of the sample world's PostgreSQL billing
database, against a Prefect server on PostgreSQL started with deployments/server.env, the client
inside local_client_settings(). ``--env K=V`` passes more variables to the client.

Every 0.5 s this process reads from /proc the resident memory (VmRSS, summed over the process
tree; pages shared after a fork count in each process) of the client (the batch process and its
children, the sandbox workers) and of the server (``prefect server start`` and its children),
and counts the tickets settled (past the automatic states) in the billing database. When the
k-th ticket has settled it records the peak of each since the batch started (after the warm-up),
and the kernel's own peak of the client process (VmHWM, not sampled).

Flat or linear: from the first checkpoint to the last, each peak (client tree, server tree)
may grow by at most FLAT_MB_PER_1000 MB per 1,000 tickets (18 MB from 1,000 to 10,000 tickets):
anything kept per ticket from about 2 KB up reads as linear. A ratio such as "last <= 1.25x the
first" would call 5 KB per ticket flat (+45 MB on a 340 MB client is 1.13x). Small runs read
the same rule but resolve it poorly (RSS moves in steps of about 1 MB).

With ``--tracemalloc`` the client also traces its allocations (several times slower, and
tracemalloc's own memory counts in the RSS: read that run for where, not how much); the growth
between the first and the last checkpoint is printed by file:line and by stack, with the live
objects by type and the entries of each open flow-run context's ``run_results``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pg  # noqa: E402
import proctree  # noqa: E402
import psycopg  # noqa: E402
import run  # noqa: E402

FULL = run.MEMORY_GOAL
QUICK = run.QUICK.memory
FLAT_MB_PER_1000 = 2.0
SAMPLE_S = 0.5
PROGRESS_S = 10.0
MB = 2**20
#: Ticket states the batch moves through on its own: a ticket past them has settled.
AUTOMATIC = ["RECEIVED", "TRIAGED", "DATA_FETCHED", "ANALYZED"]


@dataclass
class Checkpoint:
    """Peaks (bytes) from the batch's start until the k-th ticket settled."""

    tickets: int
    at_s: float
    client_peak: int
    server_peak: int
    client_process_peak: int  # the batch process alone, sampled
    client_hwm: int  # the batch process alone, the kernel's peak
    client_now: int
    server_now: int


@dataclass
class Watch:
    """What the sampling loop keeps."""

    checkpoints: list[int]
    base: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=lambda: {"client": 0, "server": 0,
                                                          "process": 0, "hwm": 0})
    reached: list[Checkpoint] = field(default_factory=list)
    samples: int = 0
    series: list[tuple[float, int, int, int, int]] = field(default_factory=list)  # every
    # PROGRESS_S: seconds, tickets settled, client, client process, server bytes right then


def sample(client: int, server: int) -> dict[str, int]:
    """Resident bytes right now: both trees, the client process alone and its VmHWM."""
    return {"client": proctree.rss_bytes(client), "server": proctree.rss_bytes(server),
            "process": proctree.rss_bytes_of(client), "hwm": proctree.high_water_bytes(client)}


def settled(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """Tickets in the billing database past the automatic states."""
    row = conn.execute("SELECT count(*) FROM tickets WHERE state <> ALL(%s)",
                       (AUTOMATIC,)).fetchone()
    return int(row[0]) if row else 0


def _observe(watch: Watch, now: dict[str, int], count: int, elapsed: float,
             trace: Path | None, total: int) -> None:
    for key, value in now.items():
        watch.peak[key] = max(watch.peak[key], value)
    watch.samples += 1
    for k in watch.checkpoints:
        if trace is not None and count >= min(k, total - 2) and not _asked(trace, k):
            (trace / f"take-{k}").touch()  # before the flow ends, also for the last one
        if count >= k and all(c.tickets != k for c in watch.reached):
            watch.reached.append(Checkpoint(k, elapsed, watch.peak["client"],
                                            watch.peak["server"], watch.peak["process"],
                                            watch.peak["hwm"], now["client"], now["server"]))


def _asked(trace: Path, k: int) -> bool:
    return any(trace.glob(f"take-{k}")) or any(trace.glob(f"{k}.*"))


def _progress(count: int, total: int, elapsed: float, now: dict[str, int]) -> None:
    rate = count / elapsed if elapsed > 0 else 0.0
    print(f"[memory] {count}/{total} settled, {rate:.2f}/s, {elapsed:.0f} s; RSS client "
          f"{now['client'] / MB:.0f} MB (process {now['process'] / MB:.0f}), server "
          f"{now['server'] / MB:.0f} MB", file=sys.stderr, flush=True)


def watch_batch(process: subprocess.Popen[bytes], server: int, database: str, watch: Watch,
                total: int, trace: Path | None) -> None:
    """Sample until the client exits; the go signal must have been given just before."""
    started, shown = time.monotonic(), 0.0
    with psycopg.connect(pg.url(database, driver="postgresql"), autocommit=True) as conn:
        before = settled(conn)  # the warm-up ticket
        while process.poll() is None:
            now, count = sample(process.pid, server), settled(conn) - before
            elapsed = time.monotonic() - started
            _observe(watch, now, count, elapsed, trace, total)
            if elapsed - shown >= PROGRESS_S:
                _progress(count, total, elapsed, now)
                watch.series.append((round(elapsed, 1), count, now["client"], now["process"],
                                     now["server"]))
                shown = elapsed
            time.sleep(SAMPLE_S)
        # the last ticket may settle less than a sample before the client exits
        _observe(watch, sample(process.pid, server), settled(conn) - before,
                 time.monotonic() - started, None, total)


@contextmanager
def client(lab_: run.Lab, database: str, emails: list[Path], warmup: Path,
           extra: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """The batch process, warmed up and waiting at its barrier; killed if still running."""
    barrier = Path(tempfile.mkdtemp(dir=lab_.home, prefix="memory-"))
    listing, log_path = barrier / "emails.txt", barrier / "client.log"
    listing.write_text("\n".join(map(str, emails)))
    # stdout to a file, not a pipe: the client's last line (a state per email, about 800 KB at
    # 10,000) would fill a pipe nobody reads while this process samples, and hang both
    with log_path.open("ab") as log, (barrier / "client.out").open("wb") as out:
        process = subprocess.Popen(
            [run.PYTHON, str(HERE / "ticket_runner.py"), "batch", str(listing), "--warmup",
             str(warmup), "--barrier", str(barrier)],
            env=lab_.env(database, "shipped", {**run.SHIPPED_CLIENT, **extra}),
            cwd=lab_.home, stdout=out, stderr=log)
        try:
            while not any(barrier.glob("ready-*")):
                if process.poll() is not None:
                    raise RuntimeError(f"client failed:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.05)
            yield process, barrier, log_path
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def measure(lab_: run.Lab, count: int, checkpoints: list[int], extra: dict[str, str],
            traced: bool) -> dict[str, Any]:
    """One batch of ``count`` tickets, sampled; every figure."""
    pending = lab_.world.emails(state=run.APPROVAL_PENDING)
    if len(pending) < count + 1:
        raise ValueError(f"the world has {len(pending)} pending emails, {count + 1} needed")
    server = lab_.server("shipped")
    watch = Watch(sorted(k for k in checkpoints if k <= count))
    with pg.database("bench_memory", lab_.template) as database:
        trace = Path(tempfile.mkdtemp(dir=lab_.home, prefix="heap-")) if traced else None
        env = {**extra, **({"BENCH_TRACEMALLOC": str(trace)} if trace else {})}
        with client(lab_, database, pending[:count], pending[-1], env) as (proc, barrier, log):
            watch.base = sample(proc.pid, server.process.pid)
            _progress(0, count, 0.0, watch.base)
            (barrier / "go").touch()
            watch_batch(proc, server.process.pid, database, watch, count, trace)
            proc.wait()
            out = (barrier / "client.out").read_bytes()
            if proc.returncode != 0:
                raise RuntimeError(f"client failed ({proc.returncode}):\n"
                                   f"{log.read_text()[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return {"tickets": count, "wall_s": result["wall_s"], "base": watch.base,
            "checkpoints": [asdict(c) for c in watch.reached], "samples": watch.samples,
            "series": watch.series,
            "wrong_outcomes": run.wrong(lab_, result["states"]), "env": extra,
            "verdict": verdict(watch.reached),
            "heap": heap_growth(trace, watch.reached) if trace else None}


def verdict(reached: list[Checkpoint]) -> dict[str, Any]:
    """Growth per 1,000 tickets from the first checkpoint to the last, and flat or linear."""
    if len(reached) < 2:
        return {"flat": None, "why": "fewer than two checkpoints reached"}
    first, last = reached[0], reached[-1]
    per = 1000 / (last.tickets - first.tickets)
    growth = {"client": (last.client_peak - first.client_peak) * per / MB,
              "server": (last.server_peak - first.server_peak) * per / MB,
              "client_process": (last.client_process_peak - first.client_process_peak)
              * per / MB}
    ratio = {"client": last.client_peak / max(first.client_peak, 1),
             "server": last.server_peak / max(first.server_peak, 1)}
    flat = growth["client"] <= FLAT_MB_PER_1000 and growth["server"] <= FLAT_MB_PER_1000
    return {"flat": flat, "mb_per_1000": growth, "ratio_last_first": ratio,
            "rule": f"flat: each peak grows <= {FLAT_MB_PER_1000:g} MB per 1,000 tickets "
                    f"from checkpoint {first.tickets} to {last.tickets}"}


# ---------------------------------------------------------------- where the client grew


def heap_growth(trace: Path, reached: list[Checkpoint], top: int = 12) -> dict[str, Any]:
    """The client's allocations still alive at the last checkpoint but not at the first."""
    if not reached:
        return {"error": "no checkpoint reached"}
    first, last = reached[0].tickets, reached[-1].tickets
    older = _load(trace, str(first))
    newer, label = _load(trace, str(last)), str(last)
    if newer is None:
        newer, label = _load(trace, "end"), "end"
    if older is None or newer is None or first == last:
        return {"error": "snapshots missing", "files": sorted(p.name for p in trace.iterdir())}
    tickets = last - first
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    older, newer = older.filter_traces(ignore), newer.filter_traces(ignore)
    return {"from": first, "to": label, "tickets": tickets,
            "total_kib": sum(s.size_diff for s in newer.compare_to(older, "filename")) / 1024,
            "by_line": [_stat(s, tickets) for s in newer.compare_to(older, "lineno")[:top]],
            "by_stack": [{**_stat(s, tickets), "stack": s.traceback.format(limit=12)}
                         for s in newer.compare_to(older, "traceback")[:3]],
            **census_growth(trace, str(first), label, tickets, top)}


def census_growth(trace: Path, first: str, last: str, tickets: int, top: int
                  ) -> dict[str, Any]:
    """Live objects by type at both checkpoints (bench/ticket_runner.py's census)."""
    try:
        older, newer = (json.loads((trace / f"{name}.census.json").read_text())
                        for name in (first, last))
    except OSError:
        return {}
    names = set(older["types"]) | set(newer["types"])
    growth = sorted(((newer["types"].get(n, 0) - older["types"].get(n, 0), n) for n in names),
                    reverse=True)[:top]
    return {"types": [{"type": n, "count": c, "per_ticket": c / tickets} for c, n in growth],
            "run_results": {"from": older["run_results"], "to": newer["run_results"]}}


def _load(trace: Path, name: str) -> tracemalloc.Snapshot | None:
    """A snapshot the client wrote (it has exited: what is not there never will be)."""
    path = trace / f"{name}.snapshot"
    return tracemalloc.Snapshot.load(str(path)) if path.exists() else None


def _stat(stat: tracemalloc.StatisticDiff, tickets: int) -> dict[str, Any]:
    frame = stat.traceback[0]
    return {"where": f"{_short(frame.filename)}:{frame.lineno}", "kib": stat.size_diff / 1024,
            "blocks": stat.count_diff, "bytes_per_ticket": stat.size_diff / tickets}


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/bench/", "/flows/", "/tasks/", "/src/"):
        if marker in filename:
            return marker.strip("/") + "/" + filename.split(marker, 1)[1]
    return filename


# ---------------------------------------------------------------- printing and the command


def print_table(result: dict[str, Any]) -> None:
    """The checkpoints, growth and verdict; the heap's growth when traced."""
    print(f"\nreconcile-inbox as shipped, {result['tickets']:,} tickets to APPROVAL_PENDING in "
          f"{result['wall_s']:.0f} s ({result['samples']} samples every {SAMPLE_S} s)"
          + (f"; {result['wrong_outcomes']} WRONG OUTCOMES" if result["wrong_outcomes"] else "")
          + (f"; client env {result['env']}" if result["env"] else ""))
    print(f"{'checkpoint':>10}  {'tickets':>7}  {'at s':>6}  {'client peak MB':>14}  "
          f"{'(process, HWM)':>14}  {'server peak MB':>14}  {'MB / 1,000 tickets':>22}")
    base = result["base"]
    print(f"{'start':>10}  {0:>7}  {0:>6}  {base['client'] / MB:>14.0f}  "
          f"{base['process'] / MB:>6.0f} {base['hwm'] / MB:>7.0f}  {base['server'] / MB:>14.0f}")
    previous = None
    for c in result["checkpoints"]:
        growth = ""
        if previous:
            per = 1000 / (c["tickets"] - previous["tickets"])
            growth = (f"client {(c['client_peak'] - previous['client_peak']) * per / MB:+.1f}, "
                      f"server {(c['server_peak'] - previous['server_peak']) * per / MB:+.1f}")
        print(f"{'k=' + str(c['tickets']):>10}  {c['tickets']:>7}  {c['at_s']:>6.0f}  "
              f"{c['client_peak'] / MB:>14.0f}  {c['client_process_peak'] / MB:>6.0f} "
              f"{c['client_hwm'] / MB:>7.0f}  {c['server_peak'] / MB:>14.0f}  {growth:>22}")
        previous = c
    v = result["verdict"]
    if v["flat"] is not None:
        print(f"verdict: {'FLAT' if v['flat'] else 'LINEAR'} ({v['rule']}: client "
              f"{v['mb_per_1000']['client']:+.1f}, server {v['mb_per_1000']['server']:+.1f} MB "
              f"per 1,000; last/first client {v['ratio_last_first']['client']:.2f}x, server "
              f"{v['ratio_last_first']['server']:.2f}x)")
    if result["heap"]:
        _print_heap(result["heap"])


def _print_heap(heap: dict[str, Any]) -> None:
    if "error" in heap:
        print(f"heap: {heap['error']}")
        return
    print(f"\nclient heap growth, checkpoint {heap['from']} -> {heap['to']} "
          f"({heap['tickets']} tickets): {heap['total_kib']:+,.0f} KiB in all")
    for s in heap["by_line"]:
        print(f"  {s['kib']:>+9,.0f} KiB {s['blocks']:>+8,} blocks "
              f"{s['bytes_per_ticket']:>+8,.0f} B/ticket  {s['where']}")
    for s in heap["by_stack"]:
        print(f"\n  {s['kib']:+,.0f} KiB ({s['bytes_per_ticket']:+,.0f} B/ticket) allocated at:")
        print("\n".join("  " + line for line in s["stack"]))
    if "types" in heap:
        print(f"\nlive objects by type, checkpoint {heap['from']} -> {heap['to']}:")
        for t in heap["types"]:
            print(f"  {t['count']:>+8,} ({t['per_ticket']:+.2f}/ticket)  {t['type']}")
        runs = heap["run_results"]
        print(f"entries in each open flow-run context's run_results: {runs['from']} -> "
              f"{runs['to']}")


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, not {pair!r}")
        env[key] = value
    return env


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", help="tickets settled at which to record the peaks, "
                        "e.g. 1000,10000 (the last is the batch's size)")
    parser.add_argument("--quick", action="store_true", help="checkpoints 100,1000")
    parser.add_argument("--env", action="append", default=[], metavar="K=V",
                        help="an environment variable for the client (repeatable)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace the client's allocations (slow; for where, not how much)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args()
    checkpoints = (sorted(int(k) for k in args.checkpoints.split(",") if k.strip())
                   if args.checkpoints else list(QUICK if args.quick else FULL))
    if not checkpoints or checkpoints[0] < 1:
        raise SystemExit("--checkpoints wants positive ticket counts")
    count = checkpoints[-1]
    print(f"[memory] building a world for {count:,} tickets", file=sys.stderr, flush=True)
    with run.lab(-(-(count + 1) // 12) + 1) as lab_:
        result = measure(lab_, count, checkpoints, _env_pairs(args.env), args.tracemalloc)
    result["load_average"] = os.getloadavg()
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
