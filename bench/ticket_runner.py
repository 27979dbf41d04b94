"""Run one way of processing tickets over a list of emails, in this process; print timings.

    python bench/ticket_runner.py MODE EMAILS_FILE [--warmup EML]

MODE is ``core`` (billing_recon.pipeline, no Prefect), ``shipped`` (flows/process_ticket, one
flow run per email, ``approval_wait_s=0``), ``lean`` (bench/lean_flow, the same per email),
``naive`` (bench/naive_flow), ``batch`` (flows/reconcile_inbox over all the emails in one run;
BILLING_RECON_BATCH_IN_FLIGHT from the environment), or a peer of bench/peers.py:
``langgraph-sqlite``, ``langgraph-pg``, ``dbos`` (one durable run per email), ``langgraph-batch``
or ``dbos-batch`` (every email at once, 4 in flight; state in ``BENCH_PEER_DB``). The database,
the Prefect server and the sandbox come from the environment. The last stdout line is one JSON
object: wall and CPU seconds of the timed part (the warm-up email is run first and not counted)
and each email's settled state.

``BENCH_CLIENT=shipped`` runs everything inside
billing_recon_tasks.client_settings.local_client_settings(), as our entry points do;
``BENCH_HEARTBEATS=off`` turns flow-run heartbeats off (a measured proposal, not shipped).
``BENCH_TRACEMALLOC=DIR`` traces the timed part's allocations (bench/memory_batch.py): a file
``DIR/take-NAME`` asks for a snapshot, written to ``DIR/NAME.snapshot``; ``DIR/end.snapshot``
is taken as the timed part ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect_server import machine_busy, postgres_cpu, process_tree_cpu

#: The peers of bench/peers.py.
PEER_MODES = ("langgraph-sqlite", "langgraph-pg", "langgraph-batch", "dbos", "dbos-batch")


def _cpu() -> dict[str, float]:
    """CPU seconds so far: this process tree, the Prefect server, PostgreSQL, the machine."""
    server = os.environ.get("BENCH_SERVER_PID")
    return {"client": process_tree_cpu(os.getpid()),
            "server": process_tree_cpu(int(server)) if server else 0.0,
            "postgres": postgres_cpu(), "machine": machine_busy()}


@contextmanager
def _client_settings() -> Iterator[None]:
    """The in-process Prefect settings this run asks for (see the module docstring)."""
    with ExitStack() as stack:
        if os.environ.get("BENCH_CLIENT") == "shipped":
            from billing_recon_tasks.client_settings import local_client_settings

            stack.enter_context(local_client_settings())
        if os.environ.get("BENCH_HEARTBEATS") == "off":
            from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

            stack.enter_context(temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        yield


@contextmanager
def _heap_snapshots() -> Iterator[None]:
    """With BENCH_TRACEMALLOC: trace allocations, snapshot on request and at the end."""
    folder = os.environ.get("BENCH_TRACEMALLOC")
    if not folder:
        yield
        return
    import tracemalloc

    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "16")))
    stop = threading.Event()
    watcher = threading.Thread(target=_snapshot_on_request, args=(Path(folder), stop),
                               daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        _snapshot(Path(folder), "end")
        tracemalloc.stop()


def _snapshot_on_request(folder: Path, stop: threading.Event) -> None:
    while not stop.wait(0.1):
        for request in sorted(folder.glob("take-*")):
            _snapshot(folder, request.name.removeprefix("take-"))
            request.unlink()


def _snapshot(folder: Path, name: str) -> None:
    """The heap (``NAME.snapshot``, written under another name first) and a census of live
    objects (``NAME.census.json``)."""
    import tracemalloc

    partial = folder / f"{name}.partial"
    tracemalloc.take_snapshot().dump(str(partial))
    (folder / f"{name}.census.json").write_text(json.dumps(_census()))
    partial.rename(folder / f"{name}.snapshot")


def _census() -> dict[str, Any]:
    """Live objects the collector tracks, by type; the entries each open flow-run context
    keeps in ``run_results`` (Prefect links every task and subflow result there)."""
    import gc
    from collections import Counter

    from prefect.context import EngineContext

    objects = gc.get_objects()
    types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
    contexts = [o for o in objects if isinstance(o, EngineContext)]
    return {"types": dict(types.most_common(300)),
            "run_results": sorted((len(c.run_results) for c in contexts), reverse=True)}


def _spent(before: dict[str, float]) -> dict[str, float]:
    after = _cpu()
    return {key: after[key] - before[key] for key in before}


def _core(paths: list[Path]) -> None:
    from billing_recon import pipeline, runtime

    deps = runtime.build()
    for path in paths:
        pipeline.process_email(deps, path.read_bytes(), str(path))


async def _shipped_async(paths: list[Path]) -> None:
    from billing_recon_flows.process_ticket import process_ticket

    for path in paths:
        await process_ticket(email_path=str(path), approval_wait_s=0)


async def _lean_async(paths: list[Path]) -> None:
    from lean_flow import process_ticket_lean

    for path in paths:
        await process_ticket_lean(str(path), approval_wait_s=0)


def _naive(paths: list[Path]) -> None:
    from naive_flow import naive_process_ticket

    for path in paths:
        naive_process_ticket(str(path))


def _peer(mode: str) -> Any:
    import peers

    return {"langgraph-sqlite": lambda p: peers.langgraph_tickets(p, "sqlite"),
            "langgraph-pg": lambda p: peers.langgraph_tickets(p, "pg"),
            "langgraph-batch": peers.langgraph_batch,
            "dbos": peers.dbos_tickets, "dbos-batch": peers.dbos_batch}[mode]


def _batch(paths: list[Path]) -> None:
    """The batch over an inbox folder holding copies of the emails, named so that their order
    is the given one: as a scheduled batch runs (a flow run's parameters are capped at 512 KiB
    by default, which 10,000 email paths exceed)."""
    import shutil
    import tempfile

    from billing_recon_flows.reconcile_inbox import reconcile_inbox

    with tempfile.TemporaryDirectory(prefix="bench-inbox-") as inbox:
        for number, path in enumerate(paths):
            shutil.copyfile(path, Path(inbox, f"{number:06d}-{path.name}"))
        asyncio.run(reconcile_inbox(inbox=inbox, approval_wait_s=0))


def _states(paths: list[Path]) -> dict[str, list[str | None]]:
    from billing_recon import runtime
    from billing_recon.domain.email import parse_email
    from billing_recon.store import tickets

    deps = runtime.build()
    out: dict[str, list[str | None]] = {}
    for path in paths:
        ticket = tickets.find_by_email(deps.sessions, parse_email(path.read_bytes()).email_id)
        out[path.name] = [ticket.state, ticket.reason] if ticket else [None, None]
    return out


def _wait_for_go(barrier: Path | None) -> None:
    """With a barrier directory: say this process is warm, then wait for the signal to go."""
    if barrier is None:
        return
    (barrier / f"ready-{os.getpid()}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.01)


def _timeline(paths: list[Path]) -> dict[str, list[float]]:
    """When each ticket was opened and when it settled (epoch seconds, sorted)."""
    from sqlalchemy import func, select

    from billing_recon import runtime
    from billing_recon.domain.email import parse_email
    from billing_recon.store.models import Ticket, TicketEvent

    ids = [parse_email(p.read_bytes()).email_id for p in paths]
    with runtime.build().sessions() as session:
        rows = session.execute(
            select(func.min(TicketEvent.at), func.max(TicketEvent.at))
            .join(Ticket, Ticket.id == TicketEvent.ticket_id)
            .where(Ticket.email_id.in_(ids), TicketEvent.kind == "transition")
            .group_by(Ticket.id)).all()
    return {"opened": sorted(r[0].timestamp() for r in rows),
            "settled": sorted(r[1].timestamp() for r in rows)}


def run(mode: str, paths: list[Path], warmup: Path | None,
        barrier: Path | None = None) -> dict[str, Any]:
    """Warm up on one email, then time the rest; return the measurements."""
    if mode in ("shipped", "lean"):
        flow_runs = _shipped_async if mode == "shipped" else _lean_async

        async def both() -> tuple[float, dict[str, float]]:
            if warmup:
                await flow_runs([warmup])
            _wait_for_go(barrier)
            t0, c0 = time.perf_counter(), _cpu()
            await flow_runs(paths)
            return time.perf_counter() - t0, _spent(c0)
        wall, cpu = asyncio.run(both())
    else:
        runner = ({"core": _core, "naive": _naive, "batch": _batch}.get(mode) or _peer(mode))
        if warmup:
            runner([warmup])
        _wait_for_go(barrier)
        t0, c0 = time.perf_counter(), _cpu()
        with _heap_snapshots():
            runner(paths)
        wall, cpu = time.perf_counter() - t0, _spent(c0)
    return {"mode": mode, "n": len(paths), "wall_s": wall, "cpu_s": cpu,
            "started_at": time.time() - wall, "ended_at": time.time(),
            "states": _states(paths),
            "timeline": _timeline(paths) if "batch" in mode else None}


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["core", "shipped", "lean", "naive", "batch",
                                         *PEER_MODES])
    parser.add_argument("emails", type=Path, help="file with one .eml path per line")
    parser.add_argument("--warmup", type=Path, default=None)
    parser.add_argument("--barrier", type=Path, default=None,
                        help="directory: signal ready after the warm-up, start on its 'go' file")
    args = parser.parse_args()
    paths = [Path(line) for line in args.emails.read_text().split() if line]
    try:
        with _client_settings():
            result = run(args.mode, paths, args.warmup, args.barrier)
    finally:
        from billing_recon import runtime

        runtime.reset()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
