"""How the command line drives the flows: batches with live updates, continuing a ticket here
after a decision (billing_recon_cli.waiting reaches a waiting run). Not a flow itself; the
commands import it lazily, so commands that never run a flow do not pay for importing Prefect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from billing_recon.domain.email import EmailIdentity
from billing_recon.domain.fsm import State, is_terminal
from billing_recon.progress import ProgressBar
from billing_recon.steps import refund_status
from billing_recon.steps.intake import load_email
from billing_recon.store import inbox, tickets
from billing_recon.store.models import Ticket
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_flows.reconcile_inbox import reconcile_inbox
from billing_recon_tasks import local_server
from billing_recon_tasks.client_settings import local_client_settings
from billing_recon_tasks.runtime import deps, in_thread
from billing_recon_tasks.temporary_server import ensure_api

Update = Callable[[str, Ticket], None]
Problem = Callable[[str, Ticket, dict[str, Any]], None]
Waiting = Callable[[str, Ticket, str], None]
POLL_S = 0.1
SETTLE_WAIT_S = 60.0  # how long a batch waits for refunds still pending at its end


def _reportable(ticket: Ticket) -> bool:
    if ticket.state == State.REFUNDED.value:  # reported while a refund waits at the gateway,
        return refund_status.waiting_on_gateway(deps(), ticket.id)  # not on its way to CLOSED
    return ticket.state == State.APPROVAL_PENDING.value or is_terminal(State(ticket.state))


async def _watch(ids: dict[str, EmailIdentity], on_update: Update, done: asyncio.Event) -> None:
    """Call ``on_update(path, ticket)`` once a ticket is reportable and on every later change.

    A progress bar on stderr (on a terminal) counts the tickets that settled.
    """
    seen: dict[str, str] = {}
    bar = ProgressBar(len(ids), "tickets settled (pending approval or done)")
    try:
        await _poll(ids, on_update, done, seen, bar)
    finally:
        bar.close()


async def _poll(ids: dict[str, EmailIdentity], on_update: Update, done: asyncio.Event,
                seen: dict[str, str], bar: ProgressBar) -> None:
    while True:
        finished = done.is_set()
        for path, identity in ids.items():
            ticket = await in_thread(inbox.find_for, deps().sessions, identity)
            if ticket is None or not await in_thread(_reportable, ticket):
                continue
            if seen.get(path) != ticket.state:
                seen[path] = ticket.state
                bar.clear()
                on_update(path, ticket)
        bar.update(len(seen))
        if finished:
            return
        await asyncio.sleep(POLL_S)


async def _run(paths: list[str], wait_s: float, on_update: Update,
               on_problem: Problem | None, on_waiting: Waiting | None) -> list[dict[str, Any]]:
    limit = deps().settings.intake.max_email_bytes
    ids = {p: load_email(p, limit).identity for p in paths}
    done = asyncio.Event()
    watcher = asyncio.create_task(_watch(ids, on_update, done))
    managed = local_server.in_use()
    try:
        results = await reconcile_inbox(email_paths=paths, approval_wait_s=wait_s,
                                        fan_out=managed is not None)
        if managed is not None:
            await _announce(paths, results, managed.server.ui_url, on_waiting)
            await _until_decided(list(ids.values()), wait_s)
        elif wait_s > 0:
            await _until_settled(list(ids.values()), SETTLE_WAIT_S)
    finally:
        done.set()
        await watcher
    if on_problem is not None:
        await _report_problems(paths, ids, results, on_problem)
    return results


async def _until_settled(identities: list[EmailIdentity], timeout_s: float) -> None:
    """Wait (bounded) while a ticket of the batch is REFUNDED with a refund still pending:
    this process's webhook receiver settles it, and the watcher reports it."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        found = [await in_thread(inbox.find_for, deps().sessions, i) for i in identities]
        if not any(t is not None and t.state == State.REFUNDED.value for t in found):
            return
        await asyncio.sleep(POLL_S)


async def _announce(paths: list[str], results: list[dict[str, Any]], ui_url: str,
                    on_waiting: Waiting | None) -> None:
    """Hand each ticket suspended for a decision, with its run's page in the UI, to
    ``on_waiting`` (once the batch has run them all: each run id is final then)."""
    if on_waiting is None:
        return
    for path, result in zip(paths, results, strict=True):
        if result.get("state") != State.APPROVAL_PENDING.value:
            continue
        ticket = await in_thread(tickets.get, deps().sessions,
                                 tickets.parse_ticket_id(result["ticket_id"]))
        # A ticket an earlier command left suspended is skipped by the batch: its run waits
        run_id = result.get("flow_run_id") or ticket.flow_run_id
        if run_id:
            on_waiting(path, ticket, local_server.run_link(ui_url, run_id))


#: States in which a ticket still moves on without anyone processing its email again.
_MOVING = {State.APPROVAL_PENDING.value, State.APPROVED.value, State.REFUNDED.value}


async def _until_decided(identities: list[EmailIdentity], wait_s: float) -> None:
    """With the local runner: watch (up to ``wait_s``) while tickets of the batch await a
    decision or their refund; the runner carries them on whether or not we watch."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while asyncio.get_running_loop().time() < deadline:
        found = [await in_thread(inbox.find_for, deps().sessions, i) for i in identities]
        if not any(t is not None and t.state in _MOVING for t in found):
            return
        await asyncio.sleep(POLL_S)


async def _report_problems(paths: list[str], ids: dict[str, EmailIdentity],
                           results: list[dict[str, Any]], on_problem: Problem) -> None:
    """Tickets whose run failed or is held (global breaker): say so, nothing is silent."""
    for path, result in zip(paths, results, strict=True):
        problem: dict[str, Any] = {k: result[k] for k in ("error", "waiting") if k in result}
        if not problem:
            continue
        ticket = await in_thread(inbox.find_for, deps().sessions, ids[path])
        if ticket is not None:
            on_problem(path, ticket, problem)


class _SuspensionIsNoError(logging.Filter):
    """Prefect's engine logs a run that ends suspended (waiting for a decision) as an ERROR;
    on the terminal that reads as a failure, so it is not shown there (the run's log keeps it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Finished in state Suspended")


def _quiet_suspensions() -> None:
    from prefect.logging.handlers import APILogHandler

    for name in ("prefect", ""):
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, APILogHandler):
                handler.addFilter(_SuspensionIsNoError())


def run_emails(paths: list[str], wait_s: float, on_update: Update,
               on_problem: Problem | None = None,
               on_waiting: Waiting | None = None) -> list[dict[str, Any]]:
    """Process emails; report each as it becomes pending or ends, then wait for decisions.

    ``on_problem(path, ticket, {"error"|"waiting": ...})`` hears of tickets whose run failed
    (they keep their last committed state; processing the email again resumes them) or that
    the global model breaker holds. With the managed local server, every ticket waiting for
    a decision is suspended and ``on_waiting(path, ticket, link)`` hears of it with the link
    to its run in the Prefect UI; the local runner runs it once decided.
    """
    ensure_api()  # no API configured: a temporary server that dies with us
    _quiet_suspensions()
    with local_client_settings():  # cheaper Prefect clients on a loopback http:// server
        return asyncio.run(_run(paths, wait_s, on_update, on_problem, on_waiting))


async def _run_mailbox(wait_s: float, on_update: Update, on_problem: Problem,
                       on_waiting: Waiting | None) -> None:
    managed = local_server.in_use()
    results = await reconcile_inbox(mailbox=True, approval_wait_s=wait_s,
                                    fan_out=managed is not None)
    for result in results:
        ticket = await in_thread(tickets.get, deps().sessions,
                                 tickets.parse_ticket_id(result["ticket_id"]))
        source = await in_thread(inbox.source_of, deps().sessions, ticket)
        on_update(source, ticket)
        problem: dict[str, Any] = {k: result[k] for k in ("error", "waiting") if k in result}
        if problem:
            on_problem(source, ticket, problem)
        run_id = result.get("flow_run_id") or ticket.flow_run_id
        if (managed is not None and on_waiting is not None and run_id
                and result.get("state") == State.APPROVAL_PENDING.value):
            on_waiting(source, ticket, local_server.run_link(managed.server.ui_url, run_id))


def run_mailbox(wait_s: float, on_update: Update, on_problem: Problem,
                on_waiting: Waiting | None = None) -> None:
    """Process the new messages of the IMAP mailbox in one batch (reconcile-inbox with
    ``mailbox``); each ticket is reported, under its message's IMAP URL, when the batch ends
    (with the managed local server, a waiting one with its run's link in the UI)."""
    ensure_api()
    _quiet_suspensions()
    with local_client_settings():
        asyncio.run(_run_mailbox(wait_s, on_update, on_problem, on_waiting))


async def _continue(ticket_id: int) -> dict[str, Any]:
    return await process_ticket(ticket_id=ticket_id, approval_wait_s=0)


def continue_ticket(ticket_id: int) -> dict[str, Any]:
    """Run a ticket's flow in this process from its committed state (refund after approval)."""
    ensure_api()
    with local_client_settings():
        return asyncio.run(_continue(ticket_id))
