"""CPU per deployed ticket: the scheduled batch on a PostgreSQL-backed Prefect server with two
process workers, for several checkouts one right after the other (issue 15, item 6).

    .venv/bin/python bench/deploy_cpu.py main HEAD          # before vs after, same batch
    .venv/bin/python bench/deploy_cpu.py main . --approve   # also the approvals' refunds

Each argument is a checkout folder, or a git ref exported with `git archive`; each runs its own
code with this virtualenv (bench/checkouts.py). Every variant gets the same 53 emails (3 copies
of the sample set less tests/deploy's held-back email), a fresh Prefect server (server.env),
fresh billing and gateway databases, its own prefect.yaml deployed from its folder, and two
workers (`--limit 2`, tests/deploy's settings) started in an empty folder. The figure is the
CPU (user + system, /proc) of the workers and every process below them, exited ones included,
from the trigger until every ticket is pending or done and every run finished or suspended."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checkouts
import pg
import prefect_server
import settings
import world
from prefect.client.orchestration import SyncPrefectClient

from billing_recon.domain.email import parse_email
from billing_recon.domain.fsm import State, is_terminal
from billing_recon.store import tickets
from billing_recon.store.db import make_engine, session_factory

BIN = Path(sys.executable).parent
WORKER_SETTINGS = {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "2",
                   "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
                   "PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES": "false",
                   "PREFECT_LOGGING_LEVEL": "WARNING"}


@dataclass
class Result:
    """One variant's batch (and, with --approve, its approvals)."""

    variant: str
    tickets: int
    pending: int
    wrong: int
    wall_s: float
    cpu_s: float
    worker_runs: int
    server_cpu_s: float
    approve_cpu_s: float | None = None
    approve_wall_s: float | None = None


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run a command of the variant; its output, or an error with it."""
    done = subprocess.run(cmd, env=env, cwd=cwd, text=True, capture_output=True, timeout=600,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


@contextmanager
def workers(env: dict[str, str], cwd: Path, count: int = 2) -> Iterator[list[int]]:
    """``count`` process workers started in ``cwd`` (logs there); stopped by process group.
    A worker that died before the end would lose its live runs' CPU: that fails the run."""
    procs = []
    for n in range(count):
        with (cwd / f"worker-{n}.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", "billing-recon", "--name",
                 f"bench-{n}", "--limit", "2"], cwd=cwd, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))
    try:
        yield [p.pid for p in procs]
        for n, proc in enumerate(procs):
            if proc.poll() is not None:
                tail = (cwd / f"worker-{n}.log").read_text()[-3000:]
                raise RuntimeError(f"worker {n} exited with {proc.returncode}:\n{tail}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def cpu(pids: list[int]) -> float:
    """CPU seconds of these processes and everything below them so far."""
    return sum(prefect_server.process_tree_cpu(pid) for pid in pids)


def wait(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(1)
    raise RuntimeError(f"timed out waiting for {what}")


def ticket_states(billing_url: str, emails: list[Path]) -> dict[str, Any]:
    """Each email's ticket (None while it has none)."""
    engine = make_engine(billing_url)
    try:
        sessions = session_factory(engine)
        return {e.name: tickets.find_by_email(sessions, parse_email(e.read_bytes()).email_id)
                for e in emails}
    finally:
        engine.dispose()


def settled(found: dict[str, Any], states: set[str]) -> dict[str, Any] | None:
    """``found`` when every email has a ticket in one of ``states`` or a terminal one."""
    done = all(t is not None and (t.state in states or is_terminal(State(t.state)))
               for t in found.values())
    return found if done else None


def runs_idle(client: SyncPrefectClient) -> list[Any] | None:
    """Every flow run of the deployments finished or suspended: the runs; else None."""
    runs = client.read_flow_runs(limit=200)
    if all(r.state is not None and (r.state.is_final() or r.state.is_paused()) for r in runs):
        return runs
    return None


@dataclass(frozen=True)
class Variant:
    """A checkout and the environment its deployment processes share."""

    label: str
    tree: Path
    env: dict[str, str]
    scratch: Path


def variant_env(links: Path, scratch: Path, api_url: str, billing: str, gateway: str
                ) -> dict[str, str]:
    """The environment of the variant's CLI, deploy and workers (as tests/deploy sets it)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BILLING_RECON_", "PREFECT_", "OPENAI_", "PYTHONPATH"))}
    return {**env, **prefect_server.QUIET, **WORKER_SETTINGS,
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONPATH": str(links),
            "PREFECT_HOME": str(scratch / "prefect-home"), "PREFECT_API_URL": api_url,
            "BILLING_RECON_DATABASE_URL": pg.url(billing, "postgresql"),
            "BILLING_RECON_GATEWAY_DB": pg.url(gateway, "postgresql+psycopg"),
            "BILLING_RECON_HOME": str(scratch / "billing-home"),
            "BILLING_RECON_PAUSE_POLL_S": "1"}


def deploy(variant: Variant, data_dir: Path) -> None:
    """Load the data, create the work pool, deploy the variant's prefect.yaml from its tree."""
    python, prefect, env = str(BIN / "python"), str(BIN / "prefect"), variant.env
    run([python, "-m", "billing_recon_cli", "load", str(data_dir)], env, variant.scratch)
    run([prefect, "work-pool", "create", "billing-recon", "--type", "process"], env,
        variant.scratch)
    run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file",
         "deployments/prefect.yaml"], env, variant.tree)


def batch(variant: Variant, api_url: str, server: prefect_server.Server, inbox: Path,
          truth: dict[str, Any], approve_too: bool) -> Result:
    """Trigger one batch over ``inbox`` on two workers and measure it."""
    emails = sorted(inbox.glob("*.eml"))
    billing = variant.env["BILLING_RECON_DATABASE_URL"]
    cwd = variant.scratch / "worker-cwd"
    cwd.mkdir()
    with SyncPrefectClient(api_url) as client, workers(variant.env, cwd) as pids:
        target = client.read_deployment_by_name("reconcile-inbox/scheduled-batch")
        for schedule in target.schedules:  # no cron batch during the measurement
            client.update_deployment_schedule(target.id, schedule.id, active=False)
        cpu0, server0, start = cpu(pids), server.cpu_seconds(), time.monotonic()
        run_ = client.create_flow_run_from_deployment(target.id,
                                                      parameters={"inbox": str(inbox)})
        done = wait(lambda: (r := client.read_flow_run(run_.id)).state and r.state.is_final()
                    and r, 1800, "the batch run")
        if not done.state.is_completed():
            raise RuntimeError(f"{variant.label}: the batch ended {done.state}")
        found = wait(lambda: settled(ticket_states(billing, emails),
                                     {State.APPROVAL_PENDING.value}), 1800, "every ticket")
        runs = wait(lambda: runs_idle(client), 600, "every ticket run to finish or suspend")
        result = Result(variant.label, len(emails),
                        sum(t.state == State.APPROVAL_PENDING.value for t in found.values()),
                        sum(t.state != truth[n]["expected_state"] for n, t in found.items()),
                        round(time.monotonic() - start, 1), round(cpu(pids) - cpu0, 1),
                        sum(bool(r.infrastructure_pid) for r in runs),
                        round(server.cpu_seconds() - server0, 1))
        if approve_too:
            _approvals(variant, client, pids, found, emails, result)
    return result


def _approvals(variant: Variant, client: SyncPrefectClient, pids: list[int],
               found: dict[str, Any], emails: list[Path], result: Result) -> None:
    """Approve every pending ticket from the CLI; CPU of the workers until all are closed."""
    names = [tickets.format_ticket_id(t.id) for t in found.values()
             if t.state == State.APPROVAL_PENDING.value]
    cpu0, start = cpu(pids), time.monotonic()
    procs = [subprocess.Popen([str(BIN / "python"), "-m", "billing_recon_cli", "approve",
                               *names[i::4], "--by", "alice"], env=variant.env,
                              cwd=variant.scratch, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for i in range(4) if names[i::4]]  # four approvers at once, as tests/deploy
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"approve failed: {out}{err}")
    billing = variant.env["BILLING_RECON_DATABASE_URL"]
    wait(lambda: settled(ticket_states(billing, emails), set()), 1800, "every refund")
    wait(lambda: runs_idle(client), 600, "every resumed run to finish")
    result.approve_cpu_s = round(cpu(pids) - cpu0, 1)
    result.approve_wall_s = round(time.monotonic() - start, 1)


def measure(spec: str, data: world.World, inbox: Path, approve_too: bool) -> Result:
    """One variant on its own server and databases, all dropped afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    try:
        tree = checkouts.tree_of(spec, scratch)
        links = checkouts.package_links(tree, scratch)
        with prefect_server.running(settings.shipped_server()) as server, \
                pg.database("bench_deploy_billing") as billing, \
                pg.database("bench_deploy_gateway") as gateway:
            env = variant_env(links, scratch, server.api_url, billing, gateway)
            variant = Variant(spec, tree, env, scratch)
            deploy(variant, data.data_dir)
            return batch(variant, server.api_url, server, inbox, data.ground_truth,
                         approve_too)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def table(results: list[Result]) -> str:
    """The figures side by side, one line per variant run."""
    lines = ["| variant | tickets (pending) | wrong outcomes | wall s | CPU s | CPU s/ticket "
             "| runs started by workers | Prefect server CPU s | approvals: CPU s/ticket |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        approvals = (f"{r.approve_cpu_s / r.pending:.2f}" if r.approve_cpu_s is not None
                     and r.pending else "-")
        lines.append(f"| {r.variant} | {r.tickets} ({r.pending}) | {r.wrong} | {r.wall_s} "
                     f"| {r.cpu_s} | **{r.cpu_s / r.tickets:.2f}** | {r.worker_runs} "
                     f"| {r.server_cpu_s} | {approvals} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure every variant in turn (``--rounds`` times) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="checkout folders or git refs")
    parser.add_argument("--rounds", type=int, default=1, help="variants take turns N times")
    parser.add_argument("--approve", action="store_true", help="also approve every pending "
                        "ticket from the CLI and measure the refunds' CPU")
    parser.add_argument("--copies", type=int, default=3, help="copies of the sample set "
                        "(3: the 53-email batch of tests/deploy)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-deploy-world-") as tmp:
        data = world.build(Path(tmp) / "world", args.copies)
        held_back = f"c{args.copies - 1:04d}-01-price-overcharge.eml"  # as tests/deploy
        inbox = Path(tmp) / "inbox"
        shutil.copytree(data.inbox_dir, inbox, ignore=shutil.ignore_patterns(held_back))
        for _ in range(args.rounds):
            for spec in args.variants:
                started = time.strftime("%H:%M:%S")
                results.append(measure(spec, data, inbox, args.approve))
                print(f"{started} {spec}: {json.dumps(asdict(results[-1]))}", flush=True)
    print(table(results))
    print("load average at the end:", " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
