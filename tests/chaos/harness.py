"""The chaos suite's machinery: a gateway process, warm worker processes, tickets, a tally.

Workers are forked from a ``multiprocessing`` fork server that has imported Prefect, the flows
and the core once, so a worker killed with SIGKILL costs a fork, not an interpreter start.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from billing_recon import runtime
from billing_recon.config import Settings
from billing_recon.domain.proposal import CurrencyRefund, PaymentRefund, Proposal
from billing_recon.domain.refund_status import UNDONE
from billing_recon.domain.ticket_key import ticket_key
from billing_recon.payments.gateway_store import GatewayStore
from billing_recon.steps import approval_gate, money_owed
from billing_recon.steps.deps import Deps
from billing_recon.store.db import make_engine, migrate, session_factory
from billing_recon.store.models import (
    Customer,
    InboundEmail,
    Invoice,
    Payment,
    Refund,
    Ticket,
)
from tests.chaos.jobs import Job

API_KEY = "sk_test_chaos"  # the gateway requires it; the workers send it
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WEBHOOK_SECRET = "whsec_chaos"  # the gateway signs with it; the receivers check it
KILL_POINTS = ("refund.before_payment", "refund.before_call", "refund.after_call",
               "refund.after_ledger_call", "refund.before_record", "refund.after_record")
PER_PAYMENT = {"refund.before_payment", "refund.before_call", "refund.after_call",
               "refund.after_ledger_call"}
LEASE_S = 1.5  # the refund lock / ledger-claim lease of the suite's workers
KEY_LEASE_S = 1.0  # the gateway's in-flight key lease
SETTLE_BUDGET_S = LEASE_S + KEY_LEASE_S + 30  # longer than this after a kill: stuck
MAX_RERUNS = 8


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Tally:
    """What the suite did and found; duplicates, lost and stuck must stay 0."""

    runs: int = 0
    kills: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    expected: int = 0
    executed: int = 0
    duplicates: int = 0
    lost: int = 0
    stuck: int = 0
    over_refunded: int = 0  # cents refunded beyond what was owed (or approved), over invoices
    ledger_mismatches: int = 0  # ledger status != the gateway's, after the sweep
    closed_but_failed: int = 0  # tickets CLOSED although a refund of theirs failed
    scenarios: Counter[str] = field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        """Fold another tally into this one."""
        for name in ("runs", "kills", "expected", "executed", "duplicates", "lost", "stuck",
                     "over_refunded", "ledger_mismatches", "closed_but_failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.faults.update(other.faults)
        self.scenarios.update(other.scenarios)

    def line(self) -> str:
        """The summary line."""
        faults = sum(self.faults.values())
        detail = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
        return (f"runs={self.runs} kills={self.kills} faults_injected={faults} ({detail}) "
                f"refunds expected={self.expected} executed={self.executed} "
                f"duplicates={self.duplicates} lost={self.lost} stuck={self.stuck} "
                f"over_refunded={self.over_refunded} ledger_mismatches={self.ledger_mismatches} "
                f"closed_but_failed={self.closed_but_failed}")


def over_refunded(world: World, owed: dict[str, int]) -> int:
    """Cents refunded at the gateway beyond what the rules owed, summed over invoices
    (``owed``: invoice -> cents, computed before any refund)."""
    with world.deps.sessions() as s:
        charges = list(s.execute(select(Payment.invoice_id, Payment.charge_ref)
                                 .where(Payment.invoice_id.in_(sorted(owed)))))
    refunded: Counter[str] = Counter()
    for invoice_id, charge in charges:
        refunded[invoice_id] += sum(r["amount"] for r in world.gateway_store.list_refunds(
            charge or "") if r["status"] not in UNDONE)
    return sum(max(0, refunded[inv] - cents) for inv, cents in owed.items())


class GatewayProcess:
    """The local gateway as its own process (so it can be killed between commit and reply)."""

    def __init__(self, db_url: str, workdir: Path, env: dict[str, str] | None = None) -> None:
        """Configure; start() runs it (``env``: its lifecycle and webhook settings)."""
        self.db_url, self.workdir, self.env = db_url, workdir, env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()

    def start(self) -> None:
        """Start on the fixed port with faults enabled but none planned; wait until it answers."""
        log = open(self.workdir / "gateway.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "billing_recon.payments.gateway_server", "--db", self.db_url,
             "--port", str(self.port), "--faults", "", "--key-lease-seconds", str(KEY_LEASE_S)],
            stdout=subprocess.DEVNULL, stderr=log, cwd=self.workdir,
            env={**os.environ, "BILLING_RECON_GATEWAY_API_KEY": API_KEY, **self.env})
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the gateway exited during start-up")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, trust_env=False).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the gateway did not answer")

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def ensure_running(self) -> bool:
        """Restart after a crash; True if it had to."""
        with self.lock:
            if self.alive():
                return False
            self._collect()
            self.start()
            return True

    def plan(self, spec: str) -> None:
        """Replace the fault plan (counts of the previous plan are kept in `injected`)."""
        self._collect()
        httpx.post(f"{self.url}/v1/test_helpers/faults", data={"spec": spec}, headers=AUTH,
                   timeout=5, trust_env=False).raise_for_status()

    def _collect(self) -> None:
        if not self.alive():
            return
        try:
            got = httpx.get(f"{self.url}/v1/test_helpers/faults", headers=AUTH, timeout=5,
                            trust_env=False).json()
        except httpx.HTTPError:
            return
        self.injected.update(got["injected"])

    def stop(self) -> None:
        """Terminate (then kill) the process."""
        if self.proc is None:
            return
        self._collect()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Workers:
    """Jobs in processes forked from a warm fork server."""

    def __init__(self) -> None:
        """Start the fork server with the jobs module preloaded."""
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["tests.chaos.jobs"])

    def start(self, job: Job) -> multiprocessing.process.BaseProcess:
        """Fork a worker for `job`."""
        from tests.chaos.jobs import run_job

        proc = self.ctx.Process(target=run_job, args=(job,), daemon=True)
        proc.start()
        return proc

    def run(self, job: Job, timeout: float = 60, kill_after: float | None = None) -> int:
        """Run `job` to its end (or SIGKILL it after `kill_after` s); its exit code."""
        proc = self.start(job)
        proc.join(kill_after if kill_after is not None else timeout)
        if proc.exitcode is None:
            os.kill(proc.pid or 0, signal.SIGKILL)
            proc.join(10)
        code = proc.exitcode
        proc.close()
        return -9 if code is None else code

    @staticmethod
    def stop() -> None:
        """Stop the fork server (it would otherwise live as long as pytest)."""
        from multiprocessing import forkserver

        server = getattr(forkserver, "_forkserver", None)
        stopper = getattr(server, "_stop", None)
        if stopper is not None:
            stopper()


@dataclass
class Expected:
    """A ticket and the refunds it must end with: charge -> amount in cents."""

    ticket_id: int
    refunds: dict[str, int]


#: The Prefect API of a World whose tests call the steps directly (nothing calls it).
NO_PREFECT = "http://127.0.0.1:9/unused"


class World:
    """Billing and gateway databases, a gateway process, result storage: one scenario's."""

    def __init__(self, root: Path, prefect_api: str, billing_url: str | None = None,
                 lifecycle: dict[str, str] | None = None) -> None:
        """Create the databases (billing migrated) and the directories. ``lifecycle``:
        the gateway's BILLING_RECON_GATEWAY_* lifecycle settings; given, the gateway also
        sends its events to ``webhook_url`` (where a test runs the receiver)."""
        self.root = root
        self.webhook_port = free_port()
        self.webhook_url = f"http://127.0.0.1:{self.webhook_port}/v1/webhooks/stripe"
        root.mkdir(parents=True, exist_ok=True)
        self.billing_url = billing_url or f"sqlite:///{root}/billing.db"
        self.gateway_db = f"sqlite:///{root}/gateway.db"
        engine = make_engine(self.billing_url)
        migrate(engine)
        self.engine = engine
        self.settings = Settings(database={"url": self.billing_url}, home=root / "home",
                                 gateway={"url": "http://unused"})
        self.deps = Deps(settings=self.settings, sessions=session_factory(engine),
                         model=None, sandbox=None,  # type: ignore[arg-type]
                         refund_client=lambda: None)  # type: ignore[arg-type,return-value]
        hooks = {} if lifecycle is None else {"BILLING_RECON_WEBHOOK_URL": self.webhook_url,
                                              "BILLING_RECON_WEBHOOK_SECRET": WEBHOOK_SECRET}
        self.gateway = GatewayProcess(self.gateway_db, root, {**(lifecycle or {}), **hooks})
        self.gateway.start()
        self.gateway_store = GatewayStore(self.gateway_db)
        self.prefect_api = prefect_api
        self.seq = 0

    def env(self, **extra: str) -> dict[str, str]:
        """A worker's environment."""
        return {
            "BILLING_RECON_DATABASE_URL": self.billing_url,
            "BILLING_RECON_GATEWAY_URL": self.gateway.url,
            "BILLING_RECON_STRIPE_API_KEY": API_KEY,
            "BILLING_RECON_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "BILLING_RECON_HOME": str(self.root / "home"),
            "BILLING_RECON_LLM": "offline",
            "BILLING_RECON_REFUND_LEASE_S": str(LEASE_S),
            "BILLING_RECON_GATEWAY_TIMEOUT_S": "2",
            "BILLING_RECON_GATEWAY_RETRIES": "2",
            "BILLING_RECON_GATEWAY_BUSY_WAIT_S": "4",
            "BILLING_RECON_CHAOS_KILL_AT": "",
            "BILLING_RECON_LAYERS_OFF": "",
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_HOME": str(self.root / "prefect-home"),
            "PREFECT_LOCAL_STORAGE_PATH": str(self.root / "prefect-storage"),
            **extra,
        }

    def close(self) -> None:
        """Stop the gateway and release the databases."""
        self.gateway.stop()
        self.gateway_store.close()
        self.engine.dispose()

    def approved_ticket(self, payments: int) -> Expected:
        """A ticket already APPROVED (with a valid token) refunding `payments` payments."""
        self.seq += 1
        n = self.seq
        email = f"c{n}@chaos.test"
        invoice = f"INV-{n:06d}"
        pays = [PaymentRefund(payment_id=f"P{n}-{j}", invoice_id=invoice,
                              charge_ref=f"ch_{n}_{j}", amount=Decimal(100 + 25 * j) / 100)
                for j in range(payments)]
        key = ticket_key(email, [invoice])
        total = sum((p.amount for p in pays), Decimal(0))
        proposal = money_owed.frozen(self.settings, Proposal(
            ticket_key=key, customer_id=f"C{n}", refunds=[CurrencyRefund(
                currency="USD", amount=total, invoices={invoice: total},
                reasons=["price_overcharge"], payments=pays)]))
        ticket_id = self._insert(n, email, invoice, pays, proposal)
        for pay in pays:
            self.gateway_store.ensure_charge(pay.charge_ref or "", 5000, "usd")
        approval_gate.record_decision(self.deps, ticket_id, approval_gate.Decision(
            True, "alice", proposal.hash(), "cli"), "cli:alice")
        return Expected(ticket_id, {p.charge_ref or "": int(p.amount * 100) for p in pays})

    def _insert(self, n: int, email: str, invoice: str, pays: list[PaymentRefund],
                proposal: Proposal) -> int:
        day = datetime(2026, 3, 1, 9, tzinfo=UTC)
        with self.deps.sessions() as s, s.begin():
            s.add(Customer(customer_id=f"C{n}", name=f"Customer {n}", email=email,
                           currency="USD", tax_rate=Decimal("0.10"), tax_exempt=False))
            s.add(Invoice(invoice_id=invoice, customer_id=f"C{n}", issued_at=day,
                          currency="USD", subtotal=Decimal(50 * len(pays)), tax=Decimal(0),
                          total=Decimal(50 * len(pays))))
            s.flush()
            for pay in pays:
                s.add(Payment(payment_id=pay.payment_id, invoice_id=invoice,
                              customer_id=f"C{n}", amount=Decimal(50), currency="USD",
                              paid_at=day, charge_ref=pay.charge_ref))
            s.add(InboundEmail(email_id=f"<chaos-{n}@test>", source=None, raw=""))
            s.flush()
            ticket = Ticket(email_id=f"<chaos-{n}@test>", state="APPROVAL_PENDING", version=1,
                            sender=email, subject="chaos", customer_id=f"C{n}",
                            ticket_key=proposal.ticket_key,
                            scope={"customer_id": f"C{n}", "invoice_ids": [invoice]},
                            **money_owed.ticket_fields(self.settings, proposal))
            s.add(ticket)
            s.flush()
            return ticket.id

    def state(self, ticket_id: int) -> str:
        """The ticket's state."""
        with self.deps.sessions() as s:
            ticket = s.get(Ticket, ticket_id)
            assert ticket is not None
            return ticket.state

    def check(self, exp: Expected, tally: Tally) -> None:
        """Count the ticket's refunds at the gateway and in the ledger into `tally`."""
        tally.expected += len(exp.refunds)
        closed = self.state(exp.ticket_id) == "CLOSED"
        with self.deps.sessions() as s:
            ledger = list(s.scalars(select(Refund).where(Refund.ticket_id == exp.ticket_id)))
        for charge, cents in exp.refunds.items():
            made = self.gateway_store.list_refunds(charge)
            tally.executed += len(made)
            tally.duplicates += max(0, len(made) - 1)
            tally.over_refunded += max(0, sum(r["amount"] for r in made) - cents)
            if sum(r["amount"] for r in made) > cents:
                tally.duplicates += 0 if len(made) > 1 else 1
            if not made or not closed:
                tally.lost += 1
        if closed and len(ledger) != len(exp.refunds):
            tally.lost += 1


def settle(world: World, workers: Workers, exp: Expected, kind: str, env: dict[str, str],
           tally: Tally, budget_s: float) -> None:
    """Re-run a ticket cleanly until it is CLOSED, within `budget_s`; else it is stuck."""
    deadline = time.monotonic() + budget_s
    for _ in range(MAX_RERUNS):
        if world.state(exp.ticket_id) == "CLOSED" or time.monotonic() > deadline:
            break
        world.gateway.ensure_running()
        tally.runs += 1
        if workers.run(Job(kind, env, exp.ticket_id), timeout=budget_s) != 0:
            time.sleep(0.3)  # a transient failure (gateway restarting, key still in flight)
    if world.state(exp.ticket_id) != "CLOSED":
        tally.stuck += 1


def kill_attempt(world: World, workers: Workers, exp: Expected, kind: str,
                 env: dict[str, str], rng: random.Random, payments: int,
                 tally: Tally) -> None:
    """One attempt at the ticket with one SIGKILL somewhere: a worker kill point, a random
    moment, or the gateway dying between its commit and its answer."""
    how = rng.choice(["point", "point", "point", "timer", "timer", "gateway"])
    tally.runs += 1
    world.gateway.ensure_running()
    if how == "point":
        point = rng.choice(KILL_POINTS)
        nth = rng.randint(1, payments) if point in PER_PAYMENT else 1
        code = workers.run(Job(kind, {**env, "BILLING_RECON_CHAOS_KILL_AT": f"{point}:{nth}"},
                               exp.ticket_id))
    elif how == "timer":
        code = workers.run(Job(kind, env, exp.ticket_id),
                           kill_after=rng.uniform(0.0, 0.6 if kind == "flow" else 0.25))
    else:
        world.gateway.plan("script=" + "+".join(["ok"] * rng.randint(0, payments - 1)
                                                 + ["crash"]))
        workers.run(Job(kind, env, exp.ticket_id))
        code = -9 if world.gateway.ensure_running() else 0
        world.gateway.plan("")
    if code == -9:
        tally.kills += 1


def kill_scenario(world: World, workers: Workers, *, tickets: int, kind: str, seed: int,
                  layers_off: str = "", kills_per_ticket: int = 2) -> Tally:
    """Tickets each attacked by up to `kills_per_ticket` kills, then settled and checked."""
    rng = random.Random(seed)
    tally = Tally()
    before = Counter(world.gateway.injected)
    env = world.env(BILLING_RECON_LAYERS_OFF=layers_off)
    for _ in range(tickets):
        payments = rng.randint(1, 3)
        exp = world.approved_ticket(payments)
        for _ in range(kills_per_ticket):
            if world.state(exp.ticket_id) == "CLOSED":
                break
            kill_attempt(world, workers, exp, kind, env, rng, payments, tally)
        settle(world, workers, exp, kind, env, tally, budget_s=SETTLE_BUDGET_S)
        world.check(exp, tally)
    world.gateway.plan("")
    world.gateway.plan("")
    tally.faults.update({f"gateway_{k}": v for k, v in (world.gateway.injected - before).items()})
    tally.scenarios[f"kill/{kind}/{layers_off or 'all-on'}"] += 1
    return tally


ALL_POSITIONS = ("first", "second", "retry")


def network_scenario(world: World, workers: Workers, *, kind: str, faults: list[str],
                     layers_off: str = "", positions: tuple[str, ...] = ALL_POSITIONS) -> Tally:
    """Each fault at each call of a two-payment ticket (the first call, the second, the first
    and its retry); every ticket must end with exactly one refund per payment."""
    tally = Tally()
    before = Counter(world.gateway.injected)
    env = world.env(BILLING_RECON_LAYERS_OFF=layers_off)
    for fault in faults:
        scripts = {"first": [fault], "second": ["ok", fault], "retry": [fault, fault]}
        for script in (scripts[p] for p in positions):
            exp = world.approved_ticket(2)
            world.gateway.plan("hold=2.5,script=" + "+".join(script))
            tally.runs += 1
            workers.run(Job(kind, env, exp.ticket_id), timeout=60)
            if world.gateway.ensure_running():
                tally.faults["gateway_crash"] += 1  # it died with its own count
            world.gateway.plan("")
            settle(world, workers, exp, kind, env, tally, budget_s=SETTLE_BUDGET_S)
            world.check(exp, tally)
    world.gateway.plan("")
    tally.faults.update({f"gateway_{k}": v for k, v in (world.gateway.injected - before).items()})
    tally.scenarios[f"network/{kind}/{layers_off or 'all-on'}"] += 1
    return tally


def in_parallel(worlds: list[World], run: Any) -> Tally:
    """Run `run(world, index)` for each world in its own thread; the tallies added up."""
    from concurrent.futures import ThreadPoolExecutor

    total = Tally()
    with ThreadPoolExecutor(len(worlds)) as pool:
        for tally in pool.map(run, worlds, range(len(worlds))):
            total.add(tally)
    return total


def write_email(folder: Path, name: str, body: str, message_id: str | None = None) -> str:
    """An .eml from Ann (see tests.flows.conftest) about `body`; its path."""
    path = folder / f"{name}.eml"
    path.write_text(f"From: ann@example.com\r\nTo: billing@example.com\r\nSubject: Refund\r\n"
                    f"Message-ID: {message_id or f'<{name}@chaos>'}\r\n\r\n{body}\r\n")
    return str(path)


def run_together(workers: Workers, jobs: list[Job], timeout: float = 120) -> list[int]:
    """Start every job at once; their exit codes."""
    procs = [workers.start(job) for job in jobs]
    codes = []
    for proc in procs:
        proc.join(timeout)
        if proc.exitcode is None:
            os.kill(proc.pid or 0, signal.SIGKILL)
            proc.join(10)
        codes.append(-9 if proc.exitcode is None else proc.exitcode)
        proc.close()
    return codes


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own: initdb in a temp dir, a free loopback port.

    PostgreSQL refuses to run as root; as root the cluster runs as `nobody`.
    """

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self) -> None:
        """Pick a directory and a port; start() creates and runs the cluster."""
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="billing-recon-pg-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.started = False

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        if os.geteuid() == 0:
            os.chown(self.dir, 65534, 65534)
        self._run(str(self.BIN / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres",
                  "--auth=trust", "-N")
        self._ctl("start")
        self.started = True

    def _ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-o", options,
                  "-l", str(self.dir / "log"), "-m", "fast", "-w", action)

    def restart(self) -> None:
        """Stop (fast: every connection is cut) and start again."""
        self._ctl("restart")

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        import shutil

        try:
            if self.started:
                self._run(str(self.BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                          "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def direct_world(root: Path) -> Iterator[World]:
    """A World for tests that call the steps directly (no Prefect); afterwards it is closed
    and the process's dependencies are reset."""
    made = World(root, NO_PREFECT)
    try:
        yield made
    finally:
        made.close()
        runtime.reset()
