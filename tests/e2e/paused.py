"""Tickets waiting for approval in a background ``process --json``: its lines and paused runs."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import select

from billing_recon.store import ledger, tickets
from billing_recon.store.db import make_engine, session_factory
from billing_recon.store.models import ApprovalDecision, Refund, Ticket
from tests.e2e.conftest import Cli

SETTLE_S = 60.0
Line = dict[str, Any]


class Background:
    """A background ``billing-recon process ... --json``; its lines kept as they arrive."""

    def __init__(self, cli: Cli, emails: list[str]) -> None:
        """Start the command; two threads drain stdout (JSON lines) and stderr (kept tail)."""
        self.proc = cli.start("process", *emails, "--json", "--wait", "300")
        self.lines: list[Line] = []
        self.stderr: deque[str] = deque(maxlen=60)
        self.closed = False  # stdout reached its end: no line will come any more
        self._changed = threading.Condition()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream, keep in ((self.proc.stdout, self._keep_line), (self.proc.stderr,
                                                                     self.stderr.append)):
            threading.Thread(target=self._drain, args=(stream, keep), daemon=True).start()

    def _keep_line(self, text: str) -> None:
        self.lines.append(json.loads(text))

    def _drain(self, stream: IO[str], keep: Callable[[str], None]) -> None:
        for text in stream:
            with self._changed:
                keep(text)
                self._changed.notify_all()
        if stream is self.proc.stdout:
            with self._changed:
                self.closed = True
                self._changed.notify_all()

    def of(self, ticket: str) -> list[tuple[str, str | None]]:
        """(state, reason) of every line printed so far about ``ticket``."""
        with self._changed:
            return [(x["state"], x["reason"]) for x in self.lines if x["ticket_id"] == ticket]

    def wait_for(self, found: Callable[[list[Line]], Line | None]) -> Line:
        """Wait until ``found(lines)`` returns a line; fail with stderr's tail if it never does."""
        deadline = time.monotonic() + SETTLE_S
        with self._changed:
            while (line := found(self.lines)) is None:
                if self.closed or time.monotonic() > deadline:
                    pytest.fail(f"no such line in {self.lines}:\n{''.join(self.stderr)}")
                self._changed.wait(timeout=0.5)
        return line

    def first(self, email: str) -> Line:
        """The first line about ``email`` (a path as given on the command line)."""
        return self.wait_for(lambda lines: next((x for x in lines if x["email"] == email), None))

    def settled(self, ticket: str) -> Line:
        """The first line about ``ticket`` once it no longer awaits a decision."""
        return self.wait_for(lambda lines: next(
            (x for x in lines if x["ticket_id"] == ticket and x["state"] != "APPROVAL_PENDING"),
            None))

    def stop(self, grace_s: float = 0.0) -> None:
        """Kill the command if it still runs after ``grace_s`` seconds.

        It exits on its own once nothing awaits a decision, after its flow run reported its
        final state: a test that looks at that state after stopping gives it a grace period
        (killing it the moment the ticket's line is printed left the run RUNNING now and then
        on a loaded machine).
        """
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class BillingDb:
    """Read access to the billing database the CLI writes: cheap polling, no process per look."""

    def __init__(self, url: str) -> None:
        """Open ``url`` (the CLI's BILLING_RECON_DATABASE_URL)."""
        self.engine = make_engine(url)
        self.sessions = session_factory(self.engine)

    def ticket(self, name: str) -> Ticket:
        """The ticket ``T-...`` as stored now."""
        return tickets.get(self.sessions, tickets.parse_ticket_id(name))

    def waits(self, name: str) -> list[dict[str, Any]]:
        """Payloads of the ticket's ``awaiting_decision`` events: one per pause, with its run."""
        found = tickets.events(self.sessions, tickets.parse_ticket_id(name), "awaiting_decision")
        return [dict(event.payload or {}) for event in found]

    def decisions(self, name: str) -> list[ApprovalDecision]:
        """The decisions recorded for the ticket, oldest first."""
        with self.sessions() as session:
            return list(session.scalars(select(ApprovalDecision).where(
                ApprovalDecision.ticket_id == tickets.parse_ticket_id(name))
                .order_by(ApprovalDecision.id)))

    def refunds(self, name: str) -> list[Refund]:
        """The refunds the ledger holds for the ticket."""
        with self.sessions() as session:
            return [r for r in ledger.all_refunds(session)
                    if r.ticket_id == tickets.parse_ticket_id(name)]

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()


def run_state(api_url: str, run_id: str, auth: tuple[str, str] | None = None) -> str:
    """The flow run's state type as the server has it (PAUSED, RUNNING, FAILED...)."""
    reply = httpx.get(f"{api_url}/flow_runs/{run_id}", auth=auth, timeout=10)
    reply.raise_for_status()
    return str(reply.json()["state"]["type"])


def final_state(api_url: str, run_id: str, auth: tuple[str, str] | None = None) -> str:
    """The run's state type once it has ended (the ticket's line may come a moment earlier)."""
    deadline = time.monotonic() + SETTLE_S
    while (state := run_state(api_url, run_id, auth)) in ("RUNNING", "PAUSED", "PENDING"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return state


def paused_run(billing: BillingDb, api_url: str, ticket: str, pauses_before: int = 0,
               auth: tuple[str, str] | None = None) -> str:
    """The ticket's flow run id once it has paused more than ``pauses_before`` times.

    The flow notes ``awaiting_decision`` with its run id in the ticket's log, then pauses.
    """
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        waits = billing.waits(ticket)
        if len(waits) > pauses_before:
            run_id = str(waits[-1]["flow_run_id"])
            if run_state(api_url, run_id, auth) == "PAUSED":
                return run_id
        time.sleep(0.2)
    pytest.fail(f"{ticket} did not pause (again) within {SETTLE_S} s")
