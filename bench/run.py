"""All benchmarks of issue #7 in one command: one table of figures measured side by side.

    python bench/run.py                 # full sizes (see docs/benchmarks.md for the run time)
    python bench/run.py --quick         # small sizes, a few minutes
    python bench/run.py --only 1,3      # some sections; --json FILE also writes every figure
    python bench/run.py --only 1 --baseline main   # also our flow from another checkout

Sections: 1 per-ticket cost (core pipeline / our flow as shipped / our flow with
library-default settings / a naive Prefect flow) on the same sample tickets; 2 batch throughput
to APPROVAL_PENDING with the Prefect server on PostgreSQL, and peak memory of one long batch
(bench/memory_batch.py: 10,000 tickets, --quick 1,000); 3 the reconciliation engine against
a row-by-row Decimal version; 4 retrieval at scale with query plans; 5 the sandbox and token
benchmarks of bench/sandbox_bench.py and bench/token_bench.py, when present.

"As shipped" is deployments/server.env on the server and tasks/client_settings.py in the
client (bench/settings.py); "library defaults" is neither.

Needs PostgreSQL (BENCH_PG, default postgresql://postgres@127.0.0.1:5432; throw-away databases
are created and dropped) and bubblewrap. Every process it starts is stopped by its pid.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import checkouts  # noqa: E402
import pg  # noqa: E402
import prefect_server  # noqa: E402
import settings  # noqa: E402
import world  # noqa: E402

PYTHON = sys.executable
APPROVAL_PENDING = "APPROVAL_PENDING"


@dataclass(frozen=True)
class Sizes:
    """How big each section runs."""

    tickets: int = 200
    rounds: int = 1
    batch_compare: tuple[int, ...] = ()  # library defaults and shipped side by side, sizes
    batch: int = 1000
    growth_from: int = 100
    lines: int = 1_000_000
    engine_repeat: int = 1
    invoices: int = 1_000_000
    customers: int = 100_000
    lookups: int = 200
    memory: tuple[int, ...] = (1000, 10000)  # bench/memory_batch.py's checkpoints; the last
    # is its batch's size (() leaves it out)
    baseline: str | None = None  # sections 1 and 2: also this checkout's flow and batch


QUICK = Sizes(tickets=36, rounds=1, batch_compare=(24,), batch=96, growth_from=24,
              lines=100_000, invoices=100_000, customers=10_000, lookups=100,
              memory=(100, 1000))
MEMORY_GOAL = Sizes().memory  # issue 19, goal 5: peak RSS at 1,000 and 10,000 tickets
MEMORY_IN_FLIGHT = 4  # the memory batch runs this many tickets at once: the same code, sooner


@dataclass
class Row:
    """One line of the printed table."""

    section: str
    what: str
    value: str
    note: str = ""


@dataclass
class Report:
    """Rows to print and every raw figure for --json."""

    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, what: str, value: str, note: str = "") -> None:
        """Add a row and echo it at once (long runs show progress)."""
        self.rows.append(Row(section, what, value, note))
        print(f"  [{section}] {what}: {value}  {note}", flush=True)


# ---------------------------------------------------------------- machine and environment


def machine() -> dict[str, Any]:
    """What the numbers ran on."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    with pg.admin() as conn:
        server = conn.execute("SHOW server_version").fetchone()
    import numpy
    import pandas
    import prefect

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "prefect": prefect.__version__, "pandas": pandas.__version__,
            "numpy": numpy.__version__, "postgresql": server[0] if server else "?",
            "load_average": os.getloadavg()}


@dataclass
class Lab:
    """Shared fixtures: the sample world, its template database, servers, a scratch home."""

    stack: ExitStack
    home: Path
    world: world.World
    template: str
    servers: dict[str, prefect_server.Server] = field(default_factory=dict)

    def server(self, name: str) -> prefect_server.Server:
        """The "default" (library defaults) or "shipped" (deployments/server.env) Prefect
        server, started on first use."""
        if name not in self.servers:
            shipped = name == "shipped"
            started = self.stack.enter_context(
                prefect_server.running(settings.shipped_server() if shipped else None))
            if shipped:  # for the results-block proposal; naming it is what would change
                subprocess.run([PYTHON, "-c", settings.save_results_block(
                    str(self.home / "results"))], env={**os.environ, **started.client_env()},
                    check=True, capture_output=True)
            self.servers[name] = started
        return self.servers[name]

    def start_servers(self, names: list[str]) -> None:
        """Start several servers at once (each takes ~10 s to become healthy)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(self.server, names))

    def env(self, database: str, server: str | None, extra: dict[str, str]) -> dict[str, str]:
        """Environment of a ticket_runner process."""
        env = {**os.environ, "BILLING_RECON_DATABASE_URL": pg.url(database),
               "BILLING_RECON_HOME": str(self.home / "billing-home"),
               "BILLING_RECON_LLM": "offline",
               # Throughput runs spend far more tokens per hour than the global breaker's
               # default allows; the breaker is a safety policy, not part of the cost here.
               "BILLING_RECON_LLM_BREAKER_MAX_TOKENS": str(10**12),
               "BILLING_RECON_GATEWAY_DB": f"sqlite:///{self.home / 'gateway.db'}",
               "PREFECT_LOCAL_STORAGE_PATH": str(self.home / "prefect-storage"),
               "PYTHONPATH": os.pathsep.join([*extra.get("BENCH_CODE", "").split(os.pathsep),
                                              str(ROOT), str(HERE)]).lstrip(os.pathsep)}
        env.pop("PREFECT_API_URL", None)
        if server is not None:
            srv = self.server(server)
            env.update({**srv.client_env(), "BENCH_SERVER_PID": str(srv.process.pid)})
        return {**env, **extra}


@contextmanager
def lab(copies: int) -> Iterator[Lab]:
    """Build the world, load its template database; tear everything down afterwards."""
    from billing_recon.store.csv_loader import load_directory
    from billing_recon.store.db import make_engine, migrate, session_factory

    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="bench-run-"))
        stack.callback(shutil.rmtree, home, True)
        sample = world.build(home / "world", copies)
        template = pg.create("bench_template")
        stack.callback(pg.drop, template)
        engine = make_engine(pg.url(template))
        migrate(engine)
        load_directory(session_factory(engine), sample.data_dir)
        engine.dispose()
        yield Lab(stack, home, sample, template)


def run_tickets(lab_: Lab, mode: str, database: str, server: str | None,
                extra: dict[str, str], emails: list[Path], warmup: Path) -> dict[str, Any]:
    """One ticket_runner process; its JSON result."""
    return run_workers(lab_, mode, database, server, extra, [emails], [warmup])


def run_workers(lab_: Lab, mode: str, database: str, server: str | None,
                extra: dict[str, str], shares: list[list[Path]], warmups: list[Path]
                ) -> dict[str, Any]:
    """ticket_runner processes side by side, one per share of the emails, released together
    once every one is warm; wall time from the release to the last one's end."""
    barrier = Path(tempfile.mkdtemp(dir=lab_.home, prefix="barrier-"))
    procs = []
    for number, (share, warmup) in enumerate(zip(shares, warmups, strict=True)):
        listing = barrier / f"emails-{number}.txt"
        listing.write_text("\n".join(map(str, share)))
        log = (lab_.home / f"{mode}-{database}-{number}.log").open("ab")
        procs.append((subprocess.Popen(
            [PYTHON, str(HERE / "ticket_runner.py"), mode, str(listing), "--warmup",
             str(warmup), "--barrier", str(barrier)], env=lab_.env(database, server, extra),
            cwd=lab_.home, stdout=subprocess.PIPE, stderr=log), log))
    try:
        while len(list(barrier.glob("ready-*"))) < len(procs):
            if any(p.poll() is not None for p, _ in procs):
                break
            time.sleep(0.02)
        before = _machine_cpu(server and lab_.server(server))
        started = time.time()
        (barrier / "go").touch()
        outputs = [p.communicate()[0] for p, _ in procs]
        spent = _machine_cpu(server and lab_.server(server))
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    results = []
    for (p, _), out, number in zip(procs, outputs, range(len(procs)), strict=True):
        if p.returncode != 0:
            tail = (lab_.home / f"{mode}-{database}-{number}.log").read_text(errors="replace")
            raise RuntimeError(f"{mode} runner failed ({p.returncode}):\n{tail[-3000:]}")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    if len(results) == 1:
        return results[0]
    cpu = {key: spent[key] - before[key] for key in before}
    cpu["client"] = sum(r["cpu_s"]["client"] for r in results)
    states: dict[str, Any] = {}
    for r in results:
        states.update(r["states"])
    return {"mode": mode, "n": sum(r["n"] for r in results), "states": states, "cpu_s": cpu,
            "wall_s": max(r["ended_at"] for r in results) - started, "workers": len(results)}


def _machine_cpu(server: prefect_server.Server | None) -> dict[str, float]:
    return {"server": server.cpu_seconds() if server else 0.0,
            "postgres": prefect_server.postgres_cpu(),
            "machine": prefect_server.machine_busy()}


def wrong(lab_: Lab, states: dict[str, list[str | None]]) -> int:
    """How many tickets did not end as the ground truth says."""
    truth = lab_.world.ground_truth
    return sum(1 for name, (state, reason) in states.items()
               if (state, reason) != (truth[name]["expected_state"], truth[name]["reason"]))


# ---------------------------------------------------------------- 1. per-ticket cost


Variant = tuple[str, str, str | None, dict[str, str]]  # label, runner mode, server, env
SHIPPED_CLIENT = {"BENCH_CLIENT": "shipped"}  # tasks/client_settings.py, as our entry points
VARIANTS: tuple[Variant, ...] = (
    ("core pipeline, no Prefect", "core", None, {}),
    ("our flow as shipped", "shipped", "shipped", SHIPPED_CLIENT),
    ("our flow, library-default settings", "shipped", "default", {}),
    ("naive Prefect flow", "naive", "default", {"BILLING_RECON_SANDBOX_JOBS_PER_WORKER": "1"}),
)
#: With --proposals: changes measured here but not made (docs/benchmarks.md says why).
PROPOSALS: tuple[Variant, ...] = (
    ("proposal: shipped + one task for the automatic steps", "lean", "shipped",
     SHIPPED_CLIENT),
    ("proposal: shipped + a named result-storage block", "shipped", "shipped",
     {**SHIPPED_CLIENT, "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": settings.RESULTS_BLOCK}),
    ("proposal: shipped + heartbeats off", "shipped", "shipped",
     {**SHIPPED_CLIENT, "BENCH_HEARTBEATS": "off"}),
)


#: The same core steps on another orchestrator (bench/peers.py; the optional `bench` extra).
#: BENCH_PEER says where the peer keeps its state: a SQLite file or a PostgreSQL database.
PEERS: tuple[Variant, ...] = (
    ("peer: LangGraph, SQLite checkpointer (sync)", "langgraph-sqlite", None,
     {"BENCH_PEER": "sqlite"}),
    ("peer: LangGraph, PostgreSQL checkpointer (sync)", "langgraph-pg", None,
     {"BENCH_PEER": "pg"}),
    ("peer: DBOS Transact on PostgreSQL", "dbos", None, {"BENCH_PEER": "pg"}),
)


def peers_installed() -> bool:
    """Whether the `bench` extra (langgraph, its checkpointers, dbos) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in
               ("langgraph", "langgraph.checkpoint.sqlite", "langgraph.checkpoint.postgres",
                "dbos"))


@contextmanager
def peer_state(lab_: Lab, extra: dict[str, str]) -> Iterator[dict[str, str]]:
    """The variant's environment with BENCH_PEER_DB made for it (dropped afterwards)."""
    kind = extra.get("BENCH_PEER")
    if kind is None:
        yield extra
    elif kind == "sqlite":
        folder = Path(tempfile.mkdtemp(dir=lab_.home, prefix="peer-"))
        yield {**extra, "BENCH_PEER_DB": str(folder / "checkpoints.sqlite")}
    else:
        with pg.database("bench_peer") as name:
            yield {**extra, "BENCH_PEER_DB": pg.url(name, driver="postgresql")}


def baseline_variant(lab_: Lab, spec: str) -> Variant:
    """Our flow as shipped, run from another checkout's code (a folder or a git ref: its
    flows, tasks and core on PYTHONPATH ahead of this one's; bench/checkouts.py), against the
    same shipped server: this checkout's changes side by side with what they replace."""
    return (f"our flow as shipped, at {spec}", "shipped", "shipped",
            {**SHIPPED_CLIENT, "BENCH_CODE": baseline_code(lab_, spec)})


def baseline_code(lab_: Lab, spec: str) -> str:
    """Another checkout's packages, for PYTHONPATH ahead of this one's (bench/checkouts.py)."""
    scratch = Path(tempfile.mkdtemp(dir=lab_.home, prefix="baseline-"))
    return str(checkouts.package_links(checkouts.tree_of(spec, scratch), scratch))


def _chunks(items: list[Path], parts: int) -> list[list[Path]]:
    size = -(-len(items) // parts)
    return [items[i:i + size] for i in range(0, len(items), size)]


def ticket_cost(lab_: Lab, sizes: Sizes, report: Report, proposals: bool) -> None:
    """Section 1: the same tickets through each variant, interleaved in rounds."""
    peers = list(PEERS) if peers_installed() else []
    goal = "goal: peers side by side, per ticket and per batch (issue 19)"
    if not peers:
        report.add("1", goal, "not measured", "MISSED here: install the bench extra: "
                   "pip install -c constraints.txt -e '.[bench]'")
    else:
        report.add("1", goal, "LangGraph (SQLite, PostgreSQL), DBOS", "HOLDS: their rows in "
                   "this section and in section 2")
    variants = [*VARIANTS[:-1], *(PROPOSALS if proposals else ()), *peers, VARIANTS[-1]]
    if sizes.baseline:
        variants.insert(2, baseline_variant(lab_, sizes.baseline))
    emails = lab_.world.emails(sizes.tickets)
    spare = lab_.world.emails()[-sizes.rounds:]  # warm-up emails, never timed
    databases = [pg.create("bench_ticket", lab_.template) for _ in variants]
    totals: list[dict[str, Any]] = [{"wall_s": 0.0, "cpu": {}, "states": {}} for _ in variants]
    with ExitStack() as states:
        envs = [states.enter_context(peer_state(lab_, extra)) for *_, extra in variants]
        _ticket_rounds(lab_, sizes, variants, envs, databases, totals, emails, spare)
    _ticket_rows(lab_, report, variants, totals, len(emails))


def _ticket_rounds(lab_: Lab, sizes: Sizes, variants: list[Variant],
                   envs: list[dict[str, str]], databases: list[str],
                   totals: list[dict[str, Any]], emails: list[Path], spare: list[Path]) -> None:
    try:
        for number, chunk in enumerate(_chunks(emails, sizes.rounds)):
            for index, (_, mode, server, _extra) in enumerate(variants):
                result = run_tickets(lab_, mode, databases[index], server, envs[index], chunk,
                                     spare[number])
                total = totals[index]
                total["wall_s"] += result["wall_s"]
                total["states"].update(result["states"])
                for key, value in result["cpu_s"].items():
                    total["cpu"][key] = total["cpu"].get(key, 0.0) + value
    finally:
        for database in databases:
            pg.drop(database)


def _ticket_rows(lab_: Lab, report: Report, variants: list[Variant],
                 totals: list[dict[str, Any]], count: int) -> None:
    per = [t["wall_s"] / count for t in totals]
    naive, core = per[-1], per[0]
    data = []
    for (label, mode, server, _), seconds, total in zip(variants, per, totals, strict=True):
        cpu = {k: round(v / count, 4) for k, v in total["cpu"].items()}
        bad = wrong(lab_, total["states"])
        note = (f"naive/this {naive / seconds:.1f}x, this/core {seconds / core:.1f}x; CPU/ticket "
                f"client {cpu['client']:.3f} s, Prefect server {cpu['server']:.3f} s, "
                f"PostgreSQL {cpu['postgres']:.3f} s"
                + (f"; {bad} WRONG OUTCOMES" if bad else ""))
        report.add("1", f"{label} (s/ticket, {count} tickets)", f"{seconds:.3f}", note)
        data.append({"variant": label, "mode": mode, "server": server, "s_per_ticket": seconds,
                     "cpu_per_ticket": cpu, "wrong_outcomes": bad})
    labels = [label for label, *_ in variants]
    shipped, defaults = per[1], per[labels.index(VARIANTS[2][0])]
    baseline = next((per[i] for i, label in enumerate(labels) if label.startswith(
        "our flow as shipped, at ")), None)
    report.add("1", "goal: core pipeline <= 40 ms per ticket (issue 19)",
               f"{core * 1000:.1f} ms", "HOLDS" if core <= 0.040 else "MISSED")
    report.add("1", "goal: our flow >= 10x faster than naive (issue 19)",
               f"as shipped {naive / shipped:.1f}x",
               ("HOLDS" if naive / shipped >= 10 else "MISSED")
               + f" (with library-default settings {naive / defaults:.1f}x"
               + (f"; the baseline checkout {naive / baseline:.1f}x" if baseline else "") + ")")
    report.data["ticket_cost"] = data


# ---------------------------------------------------------------- 2. batch throughput


#: Tickets in flight at once (BILLING_RECON_BATCH_IN_FLIGHT; the shipped default is 1).
IN_FLIGHT = (2, 4, 8)


def batch(lab_: Lab, sizes: Sizes, report: Report, proposals: bool) -> None:
    """Section 2: reconcile-inbox over tickets that all reach APPROVAL_PENDING."""
    pending = lab_.world.emails(state=APPROVAL_PENDING)
    plan = [("reconcile-inbox, library-default settings", "batch", "default", n, 1, {})
            for n in sizes.batch_compare]
    plan += [("reconcile-inbox as shipped", "batch", "shipped", n, 1, SHIPPED_CLIENT)
             for n in sizes.batch_compare]
    small = sizes.growth_from
    plan += [(f"reconcile-inbox, {width} in flight", "batch", "shipped", small, 1,
              {**SHIPPED_CLIENT, "BILLING_RECON_BATCH_IN_FLIGHT": str(width)})
             for width in IN_FLIGHT]
    if sizes.baseline:  # the widest-gaining width again, from the other checkout's code
        plan += [(f"baseline: 4 in flight, at {sizes.baseline}", "batch", "shipped", small, 1,
                  {**SHIPPED_CLIENT, "BILLING_RECON_BATCH_IN_FLIGHT": "4",
                   "BENCH_CODE": baseline_code(lab_, sizes.baseline)}),
                 ("reconcile-inbox, 4 in flight, again", "batch", "shipped", small, 1,
                  {**SHIPPED_CLIENT, "BILLING_RECON_BATCH_IN_FLIGHT": "4"})]
    if proposals:  # side by side at the growth size: 2 worker processes
        plan += [("proposal: 2 worker processes", "batch", "shipped", small, 2,
                  SHIPPED_CLIENT)]
    if peers_installed():  # the same batch on the peers, four tickets in flight each
        small = sizes.growth_from
        if small not in sizes.batch_compare:
            plan += [("reconcile-inbox as shipped", "batch", "shipped", small, 1,
                      SHIPPED_CLIENT)]
        plan += [("peer: LangGraph batch, 4 in flight (PostgreSQL checkpointer)",
                  "langgraph-batch", None, small, 1, {"BENCH_PEER": "pg"}),
                 ("peer: DBOS queue, 4 in flight", "dbos-batch", None, small, 1,
                  {"BENCH_PEER": "pg"})]
    plan += [("reconcile-inbox as shipped", "batch", "shipped", sizes.batch, 1, SHIPPED_CLIENT)]
    data = []
    for label, mode, server, count, workers, extra in plan:
        shares = [pending[:count][i::workers] for i in range(workers)]
        with (pg.database("bench_batch", lab_.template) as database,
              peer_state(lab_, extra) as env):
            result = run_workers(lab_, mode, database, server, env, shares,
                                 pending[-workers:])
        data.append(_batch_row(lab_, report, label, server, result))
    report.data["batch"] = data
    one = max(d["tickets_per_s"] for d in data if d["label"] == "reconcile-inbox as shipped")
    best = max((d for d in data if d["label"].startswith("reconcile-inbox, ")
                and "in flight" in d["label"]), key=lambda d: d["tickets_per_s"])
    rate = best["tickets_per_s"]
    report.add("2", "goal: >= 10 tickets/s to APPROVAL_PENDING (issue 19)",
               f"{rate:.1f}/s ({best['label'].removeprefix('reconcile-inbox, ')})",
               ("HOLDS" if rate >= 10 else "MISSED") + f"; one at a time (the default) "
               f"{one:.1f}/s")
    _growth(report, data[-1], sizes.growth_from)
    memory(sizes, report)


def memory(sizes: Sizes, report: Report) -> None:
    """Goal 5: peak RSS of the client and the server at checkpoints of one long batch, in its
    own world and server (bench/memory_batch.py)."""
    goal = "goal: bounded memory over 10,000 tickets (issue 19)"
    if not sizes.memory:
        report.add("2", goal, "not measured", "MISSED: left out (--memory '')")
        return
    r = _json_of([str(HERE / "memory_batch.py"), "--checkpoints",
                  ",".join(map(str, sizes.memory)), "--json",
                  "--env", f"BILLING_RECON_BATCH_IN_FLIGHT={MEMORY_IN_FLIGHT}"],
                 timeout=1800 + 4 * sizes.memory[-1], progress=True)  # a long run
    report.data["memory"] = r
    for c in r["checkpoints"]:
        report.add("2", f"peak RSS until ticket {c['tickets']:,} settled (MB)",
                   f"client {c['client_peak'] / 2**20:.0f} / server "
                   f"{c['server_peak'] / 2**20:.0f}",
                   f"at {c['at_s']:.0f} s; the batch process alone "
                   f"{c['client_process_peak'] / 2**20:.0f} (kernel peak "
                   f"{c['client_hwm'] / 2**20:.0f}); client = the batch and its sandbox workers")
    v = r["verdict"]
    if v["flat"] is None:
        report.add("2", goal, "not measured", f"MISSED: {v['why']}")
        return
    first, last = r["checkpoints"][0]["tickets"], r["checkpoints"][-1]["tickets"]
    per = v["mb_per_1000"]
    growth = f"client {per['client']:+.1f}, server {per['server']:+.1f} MB/1,000"
    wrong = f"; {r['wrong_outcomes']} WRONG OUTCOMES" if r["wrong_outcomes"] else ""
    if (first, last) != MEMORY_GOAL:  # e.g. --quick: the server is still warming up
        report.add("2", goal, growth, f"MISSED: not judged at {first:,} -> {last:,} tickets "
                   "(the Prefect server's bounded caches are still filling: docs/benchmarks.md, "
                   "goal 5); the goal's checkpoints are 1,000 and 10,000" + wrong)
        return
    report.add("2", goal, f"{'flat' if v['flat'] else 'linear'}: {growth}",
               ("HOLDS" if v["flat"] else "MISSED") + f" ({first:,} -> {last:,} tickets;"
               f" {v['rule'].split(' from ')[0]})" + wrong)


def _growth(report: Report, run: dict[str, Any], first: int) -> None:
    """Within one batch run: the time until the first ``first`` and until all tickets
    settled, counted from the run's start (the flow opens every ticket before running any)."""
    timeline, start = run["timeline"], run["started_at"]
    if not timeline or len(timeline["settled"]) <= first:
        return
    settled, opened = timeline["settled"], timeline["opened"]
    head, total = settled[first - 1] - start, settled[-1] - start
    pace_head = (settled[first - 1] - settled[0]) / (first - 1)
    pace_tail = (settled[-1] - settled[-first]) / (first - 1)
    report.add("2", f"growth {first} -> {len(settled)} tickets (same run)",
               f"{head:.0f} s -> {total:.0f} s",
               f"x{total / head:.1f} time for x{len(settled) / first:.0f} tickets; opening all "
               f"{len(opened)} first took {opened[-1] - start:.0f} s; then s/ticket "
               f"{pace_head:.3f} (first {first}) vs {pace_tail:.3f} (last {first})")
    run["growth"] = {"first": first, "t_first_s": head, "t_all_s": total,
                     "open_all_s": opened[-1] - start, "pace_first_s": pace_head,
                     "pace_last_s": pace_tail}


def _batch_row(lab_: Lab, report: Report, label: str, server: str | None,
               result: dict[str, Any]) -> dict[str, Any]:
    count, wall, cpu = result["n"], result["wall_s"], result["cpu_s"]
    bad = wrong(lab_, result["states"])
    cores = os.cpu_count() or 1
    ours = cpu["client"] + cpu["server"] + cpu["postgres"]
    note = (f"{wall:.1f} s; CPU/ticket client {cpu['client'] / count:.3f} s, server "
            f"{cpu['server'] / count:.3f} s, PostgreSQL {cpu['postgres'] / count:.3f} s; "
            f"machine busy {cpu['machine'] / (wall * cores):.0%} of {cores} cores "
            f"(ours {ours / (wall * cores):.0%})" + (f"; {bad} WRONG OUTCOMES" if bad else ""))
    report.add("2", f"{label}, {count} tickets (tickets/s)", f"{count / wall:.2f}", note)
    return {"label": label, "mode": result["mode"], "server": server, "tickets": count,
            "wall_s": wall, "tickets_per_s": count / wall,
            "cpu_s": cpu, "wrong_outcomes": bad, "timeline": result.get("timeline"),
            "started_at": result.get("started_at")}


# ---------------------------------------------------------------- 3, 4, 5: own scripts


def _json_of(args: list[str], timeout: float, progress: bool = False) -> dict[str, Any]:
    """A script's last stdout line as JSON; with ``progress`` its stderr shows as it runs."""
    done = subprocess.run([PYTHON, *args], stdout=subprocess.PIPE,
                          stderr=None if progress else subprocess.PIPE, text=True,
                          timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{(done.stderr or '(stderr above)')[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def engine(sizes: Sizes, report: Report) -> None:
    """Section 3: vectorised rules against the row-by-row Decimal baseline."""
    r = _json_of([str(HERE / "engine_bench.py"), "--lines", str(sizes.lines), "--repeat",
                  str(sizes.engine_repeat), "--json"], timeout=900)
    report.data["engine"] = r
    report.add("3", f"vectorised rules, {r['lines']:,} lines (rows/s)",
               f"{r['vectorised_rows_per_s']:,.0f}", f"{r['vectorised_s']:.2f} s, "
               f"results equal to the row-by-row engine on all {r['invoices']:,} invoices")
    report.add("3", "row-by-row Decimal rules (rows/s)", f"{r['rowwise_rows_per_s']:,.0f}",
               f"{r['rowwise_s']:.2f} s")
    report.add("3", "goal: engine >= 50x row-by-row", f"{r['ratio']:.1f}x",
               ("HOLDS" if r["ratio"] >= 50 else "MISSED")
               + f"; just reading the line strings once and hashing their invoice ids takes "
               f"{r['floor_s']:.2f} s = {r['ratio_ceiling']:.0f}x at most")


def retrieval(sizes: Sizes, report: Report) -> None:
    """Section 4: fetch_invoices and scope_tables on a big PostgreSQL database."""
    r = _json_of([str(HERE / "retrieval_bench.py"), "--invoices", str(sizes.invoices),
                  "--customers", str(sizes.customers), "--tickets", str(sizes.lookups),
                  "--json"], timeout=1200)
    report.data["retrieval"] = r
    scale = f"{r['invoices']:,} invoices, {r['customers']:,} customers"
    report.add("4", f"fetch_invoices p50 / p95 ({scale})",
               f"{r['fetch_p50_ms']:.1f} / {r['fetch_p95_ms']:.1f} ms",
               f"{r['tickets']} tickets; loaded in {r['load_s']:.0f} s")
    report.add("4", "scope_tables p50 / p95", f"{r['scope_p50_ms']:.1f} / "
               f"{r['scope_p95_ms']:.1f} ms", "every row the rules need for the scope")
    billing_tables = {"customers", "invoices", "invoice_lines", "payments", "refunds",
                      "credits", "subscriptions", "price_agreements"}
    seen: dict[str, set[str]] = {}
    for plan in r["plans"]:
        seen.setdefault(plan["table"], set()).update(plan["indexes"] or ["SEQ SCAN"])
    for plan in r["plans"]:
        if plan["seq_scans"] and plan["table"] in billing_tables and not plan["forced"]:
            seen[plan["table"]].add("NO INDEX")
    missing = sorted(t for t in billing_tables if "NO INDEX" in seen.get(t, set()))
    report.add("4", "goal: retrieval served by an index", "MISSED" if missing else "HOLDS",
               "; ".join(f"{t}: {', '.join(sorted(seen[t]))}" for t in sorted(seen)
                         if t in billing_tables)
               + " (SEQ SCAN where the planner prefers it for a small table; the index is"
               " used once seq scans are disabled)")


_SANDBOX_ROW = re.compile(r"^\s+(cold|warm)\b.*?\s(\d+)\s+([\d.]+)\s+([\d.]+)\s*$")


def colleagues(report: Report) -> None:
    """Section 5: the sandbox and token benchmarks, run as they are, summarised here."""
    for script, parse in (("sandbox_bench.py", _sandbox_rows), ("token_bench.py", _token_rows)):
        path = HERE / script
        if not path.exists():
            report.add("5", script, "n/a", "not present")
            continue
        try:
            args = ["--cold", "5", "--warm", "20"] if script == "sandbox_bench.py" else []
            done = subprocess.run([PYTHON, str(path), *args], capture_output=True, text=True,
                                  timeout=600, check=False,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        except subprocess.TimeoutExpired:
            report.add("5", script, "n/a", "timed out after 600 s")
            continue
        report.data[script] = done.stdout
        if not parse(done.stdout, report):
            report.add("5", script, "n/a", f"exit {done.returncode}; output not recognised: "
                       + " | ".join(done.stdout.strip().splitlines()[-3:])[:200])


def _sandbox_rows(out: str, report: Report) -> bool:
    label, found = "", False
    for line in out.splitlines():
        if line and not line.startswith(" "):
            label = line.strip()
        elif match := _SANDBOX_ROW.match(line):
            kind, runs, p50, p95 = match.groups()
            report.add("5", f"sandbox {kind}: {label[:60]}", f"p50 {p50} ms / p95 {p95} ms",
                       f"{runs} runs")
            found = True
        elif "faster than cold" in line:
            ratio = line.strip().split()[3]
            report.add("5", f"sandbox warm vs cold: {label[:60]}", ratio)
            if "rules.py" in label:
                held = float(ratio.rstrip("x")) >= 20
                report.add("5", "goal: warm sandbox >= 20x cold on the reconciliation script "
                           "(issue 19)", ratio, "HOLDS" if held else "MISSED")
    return found


def _token_rows(out: str, report: Report) -> bool:
    mean = re.search(r"mean per ticket.*?total\s+(\d+)", out)
    most = re.search(r"max per ticket\s+total\s+(\d+)", out)
    if not mean:
        return False
    report.add("5", "model tokens per ticket (mean)", mean.group(1),
               f"max {most.group(1) if most else '?'}; offline sample inbox, see token_bench")
    return True


# ---------------------------------------------------------------- the command


def print_table(report: Report, info: dict[str, Any], started: float) -> None:
    """The final table with the machine it ran on."""
    load = info["load_average"]
    print(f"\nbilling-recon benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"{time.perf_counter() - started:.0f} s")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, Linux "
          f"{info['kernel']}; Python {info['python']}, Prefect {info['prefect']}, pandas "
          f"{info['pandas']}, numpy {info['numpy']}, PostgreSQL {info['postgresql']}")
    print(f"load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f} "
          "(the machine is shared: read ratios, not absolute times)\n")
    width = min(60, max((len(r.what) for r in report.rows), default=10))
    value = min(30, max((len(r.value) for r in report.rows), default=10))
    for row in report.rows:
        print(f"{row.section:>2}  {row.what:<{width}}  {row.value:>{value}}  {row.note}")


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--only", default="1,2,3,4,5", help="sections to run, e.g. 1,3")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--tickets", type=int, help="section 1: tickets per variant (200)")
    parser.add_argument("--batch", type=int, help="section 2: tickets in the batch (1000)")
    parser.add_argument("--batch-compare", help="section 2: also run library-default and "
                        "shipped settings side by side on batches of these sizes, e.g. 100")
    parser.add_argument("--proposals", action="store_true",
                        help="also measure flow changes proposed but not made (sections 1, 2)")
    parser.add_argument("--rounds", type=int, help="section 1: interleaved rounds (1)")
    parser.add_argument("--memory", help="section 2: the memory batch's checkpoints, e.g. "
                        "1000,10000 (the default; --quick 100,1000; '' leaves it out)")
    parser.add_argument("--baseline", help="section 1: also our flow as shipped from this git "
                        "ref or folder, interleaved with this checkout's (e.g. main); section 2: "
                        "also its batch at 4 in flight, between two of this checkout's")
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    if args.tickets:
        sizes = replace(sizes, tickets=args.tickets)
    if args.rounds:
        sizes = replace(sizes, rounds=args.rounds)
    if args.baseline:
        sizes = replace(sizes, baseline=args.baseline)
    if args.batch:
        sizes = replace(sizes, batch=args.batch, growth_from=min(sizes.growth_from, args.batch))
    if args.batch_compare is not None:
        sizes = replace(sizes, batch_compare=tuple(
            int(n) for n in args.batch_compare.split(",") if n.strip()))
    if args.memory is not None:
        sizes = replace(sizes, memory=tuple(
            sorted(int(n) for n in args.memory.split(",") if n.strip())))
    only = {s.strip() for s in args.only.split(",")}
    started = time.perf_counter()
    info = machine()
    report = Report(data={"machine": info, "sizes": sizes.__dict__})
    if only & {"1", "2"}:
        pending_copies = -(-max((*sizes.batch_compare, sizes.batch)) // 12)
        copies = max(-(-sizes.tickets // 18), pending_copies) + 1  # +1: warm-up emails
        with lab(copies) as lab_:
            lab_.start_servers(["default", "shipped"] if "1" in only or sizes.batch_compare
                               else ["shipped"])
            if "1" in only:
                ticket_cost(lab_, sizes, report, args.proposals)
            if "2" in only:
                batch(lab_, sizes, report, args.proposals)
    if "3" in only:
        engine(sizes, report)
    if "4" in only:
        retrieval(sizes, report)
    if "5" in only:
        colleagues(report)
    print_table(report, info, started)
    report.data["elapsed_s"] = time.perf_counter() - started
    if args.json:
        args.json.write_text(json.dumps(report.data, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
