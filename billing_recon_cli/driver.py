"""How the command line drives the flows: batches with live updates, resume-or-continue after
a decision, server access checks. Not a flow itself; the commands import it lazily, so commands
that never run a flow do not pay for importing Prefect.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any
from uuid import UUID

from billing_recon.domain.email import EmailIdentity
from billing_recon.domain.fsm import State, is_terminal
from billing_recon.errors import UserInputError
from billing_recon.progress import ProgressBar
from billing_recon.steps import refund_status
from billing_recon.steps.intake import load_email
from billing_recon.store import inbox, tickets
from billing_recon.store.models import Ticket
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_flows.reconcile_inbox import reconcile_inbox
from billing_recon_tasks.approval import ApprovalForm
from billing_recon_tasks.client_settings import local_client_settings
from billing_recon_tasks.runtime import deps, in_thread
from billing_recon_tasks.temporary_server import ensure_api

Update = Callable[[str, Ticket], None]
Problem = Callable[[str, Ticket, dict[str, Any]], None]
POLL_S = 0.1
SETTLE_WAIT_S = 60.0  # how long a batch waits for refunds still pending at its end
SUSPENDED = "suspended"  # tasks.approval's waiter mark for a run suspended on a worker


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
               on_problem: Problem | None) -> list[dict[str, Any]]:
    limit = deps().settings.intake.max_email_bytes
    ids = {p: load_email(p, limit).identity for p in paths}
    done = asyncio.Event()
    watcher = asyncio.create_task(_watch(ids, on_update, done))
    try:
        results = await reconcile_inbox(email_paths=paths, approval_wait_s=wait_s)
        if wait_s > 0:
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


def run_emails(paths: list[str], wait_s: float, on_update: Update,
               on_problem: Problem | None = None) -> list[dict[str, Any]]:
    """Process emails; report each as it becomes pending or ends, then wait for decisions.

    ``on_problem(path, ticket, {"error"|"waiting": ...})`` hears of tickets whose run failed
    (they keep their last committed state; processing the email again resumes them) or that
    the global model breaker holds.
    """
    ensure_api()  # no API configured: a temporary server that dies with us
    with local_client_settings():  # cheaper Prefect clients on a loopback http:// server
        return asyncio.run(_run(paths, wait_s, on_update, on_problem))


async def _run_mailbox(wait_s: float, on_update: Update, on_problem: Problem) -> None:
    results = await reconcile_inbox(mailbox=True, approval_wait_s=wait_s)
    for result in results:
        ticket = await in_thread(tickets.get, deps().sessions,
                                 tickets.parse_ticket_id(result["ticket_id"]))
        source = await in_thread(inbox.source_of, deps().sessions, ticket)
        on_update(source, ticket)
        problem: dict[str, Any] = {k: result[k] for k in ("error", "waiting") if k in result}
        if problem:
            on_problem(source, ticket, problem)


def run_mailbox(wait_s: float, on_update: Update, on_problem: Problem) -> None:
    """Process the new messages of the IMAP mailbox in one batch (reconcile-inbox with
    ``mailbox``); each ticket is reported, under its message's IMAP URL, when the batch ends."""
    ensure_api()
    with local_client_settings():
        asyncio.run(_run_mailbox(wait_s, on_update, on_problem))


def check_server_access(ticket: Ticket) -> None:
    """Fail before a decision is recorded when the configured Prefect server refuses us.

    A decision needs the server afterwards (to resume the waiting run, or to run the refund
    here); finding out only then would leave an approved ticket and a confusing traceback.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value() or not ticket.flow_run_id:
        return  # an ephemeral server is our own; nothing ran on a server for this ticket
    try:
        with get_client(sync_client=True) as client:
            client.read_flow_run(UUID(ticket.flow_run_id))
    except ObjectNotFound:
        return
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code in (401, 403):
            raise UserInputError(
                f"the Prefect server at {PREFECT_API_URL.value()} refused this client "
                f"({exc.response.status_code}): set PREFECT_API_AUTH_STRING to its credential; "
                "no decision was recorded") from exc
        raise


def waiter_alive(ticket: Ticket) -> bool:
    """Whether the process that paused for this ticket still runs on this host."""
    import socket

    host, _, pid = (ticket.waiter or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resume_waiting(ticket: Ticket, form: dict[str, Any]) -> bool:
    """Resume the run waiting on a decided ticket: a live paused process, or a run suspended
    on the work pool (a worker picks it up again). False when nobody is waiting."""
    from prefect.flow_runs import resume_flow_run

    suspended = ticket.waiter == SUSPENDED
    if not ticket.flow_run_id or not (suspended or waiter_alive(ticket)):
        return False
    try:
        ensure_api()
        with local_client_settings():
            resume_flow_run(UUID(ticket.flow_run_id),
                            run_input=ApprovalForm(**form).model_dump())
    except Exception:  # the pause timed out or the run is gone: continue it ourselves
        return False
    return True


async def _continue(ticket_id: int) -> dict[str, Any]:
    return await process_ticket(ticket_id=ticket_id, approval_wait_s=0)


def continue_ticket(ticket_id: int) -> dict[str, Any]:
    """Run a ticket's flow in this process from its committed state (refund after approval)."""
    ensure_api()
    with local_client_settings():
        return asyncio.run(_continue(ticket_id))
