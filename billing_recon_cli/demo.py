"""``billing-recon demo``: sample data in, proposals out, checked against the ground truth."""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect.settings import PREFECT_API_URL

from billing_recon import reports, runtime
from billing_recon.domain import totp
from billing_recon.domain.fsm import State
from billing_recon.ground_truth import matches
from billing_recon.steps.approver_identity import codes_required
from billing_recon.steps.deps import Deps
from billing_recon.store import approvers, tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.db import shown_url
from billing_recon.store.models import Ticket
from billing_recon.store.sample_data import generate
from billing_recon_tasks import local_server, temporary_server

DEMO_APPROVERS = ("alice", "bob")
def _expected_text(expected: dict[str, Any]) -> str:
    refund = expected.get("refund")
    return f"{refund['amount']} {refund['currency']}" if refund else "-"


def _proposed_text(ticket: Ticket) -> str:
    refund = reports.refund_summary(ticket)
    return f"{refund['amount']} {refund['currency']}" if refund else "-"


def _state_text(ticket: Ticket) -> str:
    if ticket.state == State.REFUNDED.value:
        return "REFUNDED (pending at the gateway; its webhook settles it)"
    return ticket.state + (f"({ticket.reason})" if ticket.reason else "")


def _command() -> str:
    """How the user invoked us (``.venv/bin/billing-recon`` after ``make demo``)."""
    invoked = sys.argv[0] if sys.argv else ""
    on_path = shutil.which("billing-recon")
    if Path(invoked).name != "billing-recon" or (
            on_path and Path(on_path).resolve() == Path(invoked).resolve()):
        return "billing-recon"
    relative = os.path.relpath(invoked)
    return relative if relative.startswith(".") or "/" in relative else "billing-recon"


def _ui_hint() -> str:
    if local_server.in_use():
        return "or in the Prefect UI: open a link below (⋮ -> Resume)"
    api = "" if temporary_server.owned() else PREFECT_API_URL.value() or ""
    if api:
        return f"or in the Prefect UI: {api.removesuffix('/api')}/runs (open the paused run)"
    return ("or in the Prefect UI: run the demo without BILLING_RECON_PREFECT_SERVER=temporary "
            "(the local server with its UI)")


def print_waiting(path: str, ticket: Ticket, link: str) -> None:
    """The UI link of a ticket's run suspended for a decision."""
    print(f"  {tickets.format_ticket_id(ticket.id)} ({Path(path).name}): {link}", flush=True)


class DemoReport:
    """Collects the first settled state of every email, then prints the table once."""

    def __init__(self, ground_truth: dict[str, Any], total: int,
                 deciders: Sequence[str | None] = DEMO_APPROVERS, codes: bool = False) -> None:
        self.ground_truth, self.total = ground_truth, total
        self.deciders, self.codes = list(deciders) or [None], codes
        self.first: dict[str, Ticket] = {}
        self.all_reported = threading.Event()

    def update(self, path: str, ticket: Ticket) -> None:
        """Record a ticket's state; print the table when every email has one."""
        name = Path(path).name
        if name in self.first:
            print(f"{tickets.format_ticket_id(ticket.id)} ({name}) is now {_state_text(ticket)}",
                  flush=True)
            return
        self.first[name] = ticket
        if len(self.first) == self.total:
            self.print_table()
            self.all_reported.set()

    def ok(self) -> bool:
        """Whether every email's outcome equals its ground truth."""
        return all(matches(self.ground_truth[n], t) for n, t in self.first.items())

    def print_table(self) -> None:
        """The per-email table and how to decide the pending tickets."""
        rows = [[n, tickets.format_ticket_id(t.id), self.ground_truth[n]["kind"],
                 _expected_text(self.ground_truth[n]), _proposed_text(t), _state_text(t),
                 "ok" if matches(self.ground_truth[n], t) else "MISMATCH"]
                for n, t in sorted(self.first.items())]
        print(reports.table(["email", "ticket", "kind", "expected", "proposed", "state",
                             "check"], rows))
        pending = [t for t in self.first.values() if t.state == State.APPROVAL_PENDING.value]
        good = sum(r[-1] == "ok" for r in rows)
        print(f"\n{good}/{len(rows)} outcomes equal the ground truth; "
              f"{len(pending)} tickets await a decision.")
        if pending:
            first = tickets.format_ticket_id(min(t.id for t in pending))
            cmd = _command()
            print(f"\nDecide from a second terminal (same directory):\n"
                  f"  {cmd} approvals\n"
                  f"  {cmd} approve {first} {_by(cmd, self.deciders[0], self.codes)}\n"
                  f"  {cmd} reject  {first} {_by(cmd, self.deciders[-1], self.codes)} "
                  f"--note 'not owed'\n{_ui_hint()}", flush=True)


def _by(cmd: str, name: str | None, codes: bool) -> str:
    """``--by NAME`` and, when codes count, how to give the one-time code."""
    if not codes:
        return f"--by {name}"
    if name:  # a demo approver: the CLI prints its code
        return f"--by {name} --code $({cmd} approvers code {name})"
    return "--by NAME --code CODE"


def demo_deciders(deps: Deps) -> list[str]:
    """The enabled demo approvers, enrolling them on a first run.

    With nobody enrolled (and BILLING_RECON_REQUIRE_CODE unset, which refuses demo approvers)
    alice and bob are enrolled with fresh random secrets and role ``demo``: `approvers code`
    prints their current code, so the demo's decisions pass the same code check as real ones.
    """
    if deps.settings.approval.require_code:
        return []
    if not approvers.registered(deps.sessions):
        key = deps.settings.approver_key()
        for name in DEMO_APPROVERS:
            approvers.add(deps.sessions, key, name=name, email=f"{name}@approvers.invalid",
                          role=approvers.DEMO_ROLE, secret=totp.new_secret(), actor="demo")
        print(f"Enrolled demo approvers {' and '.join(DEMO_APPROVERS)} (role demo, random "
              "secrets): decisions need their one-time code.")
    return [a.name for a in approvers.all_approvers(deps.sessions)
            if a.role == approvers.DEMO_ROLE and a.enabled]


def run_demo(directory: Path, seed: int, wait_s: float) -> int:
    """Generate, load, process; exit 0 only when every outcome equals the ground truth."""
    from billing_recon_cli import driver

    sample = generate(directory, seed=seed)
    deps = runtime.build()
    database = shown_url(deps.settings.database.sqlalchemy_url)
    print(f"Sample data in {directory}/ (seed {seed}); database {database}")
    loaded = load_directory(deps.sessions, sample.data_dir)
    print(f"Loaded {loaded.total_inserted} rows ({sum(loaded.already_present.values())} "
          "already present)")
    deciders = demo_deciders(deps)
    paths = [str(p) for p in sorted(sample.inbox_dir.glob("*.eml"))]
    print(f"Processing {len(paths)} emails...", flush=True)
    report = DemoReport(sample.ground_truth, len(paths), deciders, codes_required(deps))
    if wait_s > 0:
        print(f"(after the table, waiting up to {wait_s:.0f}s for decisions; Ctrl-C stops "
              "waiting, pending tickets stay pending)", flush=True)
    driver.run_emails(paths, wait_s, report.update, on_waiting=print_waiting)
    if not report.all_reported.is_set():
        report.print_table()
    return 0 if report.ok() else 1
