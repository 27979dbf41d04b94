"""Chaos on the refund's path after the first answer: refunds that settle late or fail (at
once or after succeeding), webhook events duplicated, reordered and lost, and a webhook
receiver (its own process) SIGKILLed between receiving an event and recording it, after
recording it, and after applying it. Then the sweep runs, and the ledger is compared with the
gateway: ``ledger_mismatches`` and ``closed_but_failed`` must be 0.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import sqlalchemy as sa
from sqlalchemy import select

from billing_recon.domain.refund_status import UNDONE
from billing_recon.payments import gateway_lifecycle
from billing_recon.store.models import Refund, Ticket, TicketEvent
from tests.chaos.harness import Expected, Tally, Workers, World
from tests.chaos.jobs import Job

#: A gateway where most things that can happen after the first answer do.
LIFECYCLE = {"BILLING_RECON_GATEWAY_PENDING_SHARE": "0.6",
             "BILLING_RECON_GATEWAY_FAILURE_SHARE": "0.35",
             "BILLING_RECON_GATEWAY_LATE_FAILURE_SHARE": "0.2",
             "BILLING_RECON_GATEWAY_SETTLE_S": "0.6",
             "BILLING_RECON_GATEWAY_LATE_FAILURE_S": "10",  # after most tickets closed
             "BILLING_RECON_GATEWAY_WEBHOOK_RETRY_S": "0.2",
             "BILLING_RECON_GATEWAY_WEBHOOK_REORDER_S": "0.5",
             "BILLING_RECON_GATEWAY_WEBHOOK_DUPLICATE_SHARE": "0.3",
             "BILLING_RECON_GATEWAY_WEBHOOK_LOSS_SHARE": "0.2"}
RECEIVER_KILL_POINTS = ("webhook.before_record", "webhook.after_record", "webhook.after_apply")
QUIET_S = 40.0  # at most this long for the gateway to settle and send everything


class ReceiverProcess:
    """The webhook receiver as its own process, re-armed with a random kill point each start."""

    def __init__(self, world: World, rng: random.Random) -> None:
        """Nothing runs until ``start()``."""
        self.world, self.rng = world, rng
        self.proc: subprocess.Popen[bytes] | None = None
        self.point = ""
        self.kills: Counter[str] = Counter()  # kill point -> receivers killed there

    def start(self, armed: bool = True) -> None:
        """Start on the world's webhook port, SIGKILLing itself at a random point if armed."""
        point = self.point = self.rng.choice(RECEIVER_KILL_POINTS)
        env = {**os.environ, **self.world.env(
            BILLING_RECON_CHAOS_KILL_AT=f"{point}:{self.rng.randint(2, 6)}" if armed else "")}
        log = open(self.world.root / "receiver.log", "ab")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "billing_recon.webhook_service", "--port",
             str(self.world.webhook_port)], stdout=subprocess.DEVNULL, stderr=log,
            cwd=self.world.root, env=env)
        log.close()
        health = self.world.webhook_url.replace("/v1/webhooks/stripe", "/healthz")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(health, timeout=1, trust_env=False).is_success:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        if self.proc.poll() is None:
            raise RuntimeError("the webhook receiver did not answer")

    def restart_if_dead(self, armed: bool = True) -> None:
        """Start again after a kill (counted)."""
        if self.proc is not None and self.proc.poll() is not None:
            if self.proc.returncode == -9:
                self.kills[f"receiver_killed_at_{self.point}"] += 1
            self.start(armed)

    def stop(self) -> None:
        """Terminate it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def _quiet(world: World) -> bool:
    """Whether the gateway has nothing left to settle or to send."""
    with world.gateway_store.engine.connect() as conn:
        plans = conn.scalar(select(sa.func.count()).select_from(gateway_lifecycle.plans).where(
            gateway_lifecycle.plans.c.settle_at.is_not(None)
            | gateway_lifecycle.plans.c.fail_at.is_not(None)))
        waiting = conn.scalar(select(sa.func.count()).select_from(gateway_lifecycle.events)
                              .where(gateway_lifecycle.events.c.next_attempt_at.is_not(None)))
    return plans == 0 and waiting == 0


def _mismatches(world: World) -> int:
    """Ledger rows whose status differs from the gateway's."""
    with world.deps.sessions() as s:
        rows = list(s.scalars(select(Refund).where(Refund.gateway_refund_id.is_not(None))))
    truth = {r["id"]: r["status"] for r in world.gateway_store.list_refunds()}
    return sum(truth.get(r.gateway_refund_id or "") != r.status for r in rows)


def _check(world: World, exp: Expected, tally: Tally) -> None:
    """Exactly one refund per charge at the gateway; the ticket where its refunds say."""
    tally.expected += len(exp.refunds)
    statuses = []
    for charge, cents in exp.refunds.items():
        made = world.gateway_store.list_refunds(charge)
        tally.executed += len(made)
        tally.duplicates += max(0, len(made) - 1)
        tally.over_refunded += max(0, sum(r["amount"] for r in made
                                          if r["status"] not in UNDONE) - cents)
        tally.lost += not made
        statuses += [r["status"] for r in made]
    with world.deps.sessions() as s:
        ticket = s.get(Ticket, exp.ticket_id)
        assert ticket is not None
    failed = any(status in UNDONE for status in statuses)
    with world.deps.sessions() as s:
        reopened = s.scalar(select(sa.func.count()).select_from(TicketEvent).where(
            TicketEvent.ticket_id == exp.ticket_id, TicketEvent.from_state == "CLOSED",
            TicketEvent.to_state == "ESCALATED"))
    tally.faults["refund_failed_after_close"] += bool(reopened)
    tally.closed_but_failed += failed and ticket.state == "CLOSED"
    wanted = ("ESCALATED", "refund_failed") if failed else ("CLOSED", "refunded")
    tally.stuck += (ticket.state, ticket.reason) != wanted


def webhook_scenario(world: World, workers: Workers, *, tickets: int, seed: int) -> Tally:
    """A batch of approved tickets refunded while the receiver is killed again and again;
    then the gateway goes quiet, the sweep runs, and everything is compared."""
    rng, tally = random.Random(seed), Tally()
    # Payments per ticket from the seed alone (the receiver's kills draw from their own).
    batch = [world.approved_ticket(rng.randint(1, 3)) for _ in range(tickets)]
    receiver = ReceiverProcess(world, random.Random(seed + 1))
    receiver.start()
    env = world.env()
    done = threading.Event()

    def keep_alive() -> None:
        while not done.wait(0.2):
            receiver.restart_if_dead()

    watcher = threading.Thread(target=keep_alive, daemon=True)
    watcher.start()
    for exp in batch:
        tally.runs += 1
        workers.run(Job("core", env, exp.ticket_id), timeout=60)
    deadline = time.monotonic() + QUIET_S
    while not _quiet(world) and time.monotonic() < deadline:
        time.sleep(0.2)
    done.set()
    watcher.join()
    receiver.restart_if_dead(armed=False)
    time.sleep(1.0)  # its worker drains what it recorded
    tally.faults["webhook_misses_before_sweep"] += _mismatches(world)
    tally.runs += 1
    workers.run(Job("sweep", env), timeout=120)
    receiver.stop()
    tally.kills += sum(receiver.kills.values())
    tally.faults.update(receiver.kills)
    tally.ledger_mismatches += _mismatches(world)
    for exp in batch:
        _check(world, exp, tally)
    tally.faults.update(_gateway_counts(world))
    tally.scenarios["webhooks/core"] += 1
    return tally


def _gateway_counts(world: World) -> dict[str, int]:
    """What the gateway did to the refunds and their events (for the summary)."""
    refunds = world.gateway_store.list_refunds()
    with world.gateway_store.engine.connect() as conn:
        events = list(conn.execute(select(gateway_lifecycle.events.c.state,
                                          gateway_lifecycle.events.c.deliveries,
                                          gateway_lifecycle.events.c.attempts)))
    return {"refund_failed": sum(r["status"] == "failed" for r in refunds),
            "webhook_lost": sum(e.state == "lost" for e in events),
            "webhook_duplicated": sum(e.deliveries > 1 for e in events),
            "webhook_retried": sum(e.attempts > e.deliveries for e in events)}
