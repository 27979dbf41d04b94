"""Wall time of `billing-recon approve` from a second terminal, checkouts side by side (issue 15.3).

    .venv/bin/python bench/approve_latency.py main .       # before vs after, same tickets

Each argument is a checkout folder or a git ref, run with its own code and this virtualenv
(bench/checkouts.py). Every variant gets a fresh working folder, home and SQLite databases, the
sample data (seed 7), and processes the same emails with `process --wait 0`, which exits leaving
them pending; then, one after another as from a second terminal, `approve T --by alice` for each
(nobody enrolled: the approver list decides, no code). Measured per approval: the command's wall
time, and the time from its start until the ticket is CLOSED (its refund done, wherever that ran).
Without PREFECT_API_URL main's approve runs the ticket's flow itself on a temporary server; this
branch resumes the suspended run on the managed local server (started by `process`; stopped at
the end) and its runner refunds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checkouts

from billing_recon.store import tickets
from billing_recon.store.db import make_engine, session_factory
from billing_recon.store.sample_data import generate

BIN = Path(sys.executable).parent
EMAILS = ("03-duplicate-payment.eml", "05-tax-error.eml", "08-prior-refund.eml")
REFUND_WAIT_S = 180.0


@dataclass
class Result:
    """One variant's figures."""

    variant: str
    process_s: float = 0.0
    approve_s: list[float] = field(default_factory=list)
    refunded_s: list[float] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def variant_env(links: Path, scratch: Path) -> dict[str, str]:
    """A fresh home, databases and Prefect home; no Prefect server configured."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BILLING_RECON_", "PREFECT_", "OPENAI_", "PYTHONPATH"))}
    return {**env, "PYTHONPATH": str(links), "PREFECT_HOME": str(scratch / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
            "BILLING_RECON_HOME": str(scratch / "home"),
            "BILLING_RECON_DATABASE_URL": f"sqlite:///{scratch / 'billing.db'}",
            "BILLING_RECON_GATEWAY_DB": f"sqlite:///{scratch / 'gateway.db'}",
            "BILLING_RECON_PREFECT_PORT": str(_free_port())}  # never 4200 (main ignores it)


def cli(env: dict[str, str], cwd: Path, *args: str) -> tuple[float, str]:
    """Run `billing-recon ARGS`; its wall time and stdout (fails loudly)."""
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "python"), "-m", "billing_recon_cli", *args], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=900, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"billing-recon {' '.join(args)}: {done.returncode}\n{done.stderr}")
    return took, done.stdout


def closed_after(billing_url: str, ticket: str, started: float) -> float:
    """Seconds from ``started`` until the ticket is CLOSED."""
    engine = make_engine(billing_url)
    sessions = session_factory(engine)
    try:
        deadline = started + REFUND_WAIT_S
        while time.perf_counter() < deadline:
            if tickets.get(sessions, tickets.parse_ticket_id(ticket)).state == "CLOSED":
                return time.perf_counter() - started
            time.sleep(0.05)
        raise RuntimeError(f"{ticket} was not CLOSED within {REFUND_WAIT_S} s")
    finally:
        engine.dispose()


def _stop_managed(env: dict[str, str], cwd: Path) -> None:
    """Stop what a managed variant left running (by pid), if anything."""
    folder = Path(env["BILLING_RECON_HOME"]) / "prefect"
    pids = [int(json.loads(p.read_text())["pid"])
            for p in [folder / "server.json", *folder.glob("runners/*.json")] if p.is_file()]
    subprocess.run([str(BIN / "python"), "-m", "billing_recon_cli", "server", "stop"], env=env,
                   cwd=cwd, capture_output=True, timeout=120, check=False)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def measure(spec: str) -> Result:
    """One variant in its own scratch folder, deleted afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-approve-"))
    result = Result(spec)
    try:
        tree = checkouts.tree_of(spec, scratch)
        env = variant_env(checkouts.package_links(tree, scratch), scratch)
        sample = generate(scratch / "sample", seed=7)
        cli(env, scratch, "load", str(sample.data_dir))
        try:
            result.process_s, out = cli(env, scratch, "process", "--json", "--wait", "0",
                                        *(str(sample.inbox_dir / e) for e in EMAILS))
            pending = sorted({json.loads(x)["ticket_id"] for x in out.splitlines()
                              if json.loads(x).get("state") == "APPROVAL_PENDING"})
            for ticket in pending:  # from a second terminal, after `process` has exited
                started = time.perf_counter()
                took, _ = cli(env, scratch, "approve", ticket, "--by", "alice")
                result.approve_s.append(round(took, 2))
                result.refunded_s.append(round(closed_after(env["BILLING_RECON_DATABASE_URL"],
                                                            ticket, started), 2))
        finally:
            _stop_managed(env, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def table(results: list[Result]) -> str:
    """The figures side by side, one line per variant run."""
    lines = ["| variant | `process --wait 0` s | approve wall s (median; each) "
             "| approve start to CLOSED s (median; each) |", "|---|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.variant} | {r.process_s:.1f} | **{statistics.median(r.approve_s):.2f}**"
                     f" ({', '.join(map(str, r.approve_s))}) | "
                     f"{statistics.median(r.refunded_s):.2f} "
                     f"({', '.join(map(str, r.refunded_s))}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure every variant in turn (``--rounds`` times) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="checkout folders or git refs")
    parser.add_argument("--rounds", type=int, default=1, help="variants take turns N times")
    args = parser.parse_args(argv)
    results = []
    for _ in range(args.rounds):
        for spec in args.variants:
            results.append(measure(spec))
            print(f"{time.strftime('%H:%M:%S')} {spec}: {results[-1]}", flush=True)
    print(table(results))
    print("load average at the end:", " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
