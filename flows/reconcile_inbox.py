"""Flow reconcile-inbox: every new email (a folder, a list, the inbox table or the IMAP mailbox)
to a ticket run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from prefect import flow
from prefect.logging import get_run_logger
from pydantic import Field

from billing_recon.errors import UserInputError
from billing_recon.store import tickets
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_tasks.admission import Settle, admit
from billing_recon_tasks.context import forget_result, in_deployment
from billing_recon_tasks.fanout import TicketRuns, sweep_overdue
from billing_recon_tasks.intake import open_ticket, open_tickets_from_table
from billing_recon_tasks.mail import mail_on, open_tickets_from_mailbox, send_mail
from billing_recon_tasks.progress import Progress
from billing_recon_tasks.runtime import deps, host_path, in_thread
from billing_recon_tasks.settle import settled


def inbox_paths(inbox: str | None, email_paths: list[str] | None) -> list[str]:
    """The emails to process: the given paths, or the folder's .eml files in name order."""
    if email_paths:
        return list(email_paths)
    if inbox is None:
        raise ValueError("reconcile_inbox needs inbox, email_paths, from_table or mailbox")
    folder = Path(inbox)
    if not folder.is_dir():
        raise ValueError(f"inbox folder {inbox} does not exist")
    return [str(p) for p in sorted(folder.glob("*.eml"))]


async def _open_all(inbox: str | None, email_paths: list[str] | None,
                    from_table: bool, mailbox: bool) -> list[int | dict[str, Any]]:
    """Open tickets in arrival order, so duplicate detection follows it.

    Each email gives its ticket id, or, when its file cannot be read at all (no bytes, so no
    ticket), why: the batch goes on with the others. A bad email itself gets a ticket, refused.
    """
    opened: list[int | dict[str, Any]] = []
    if from_table:
        opened.extend(await open_tickets_from_table())
    if mailbox:
        opened.extend(await open_tickets_from_mailbox())
    if (from_table or mailbox) and inbox is None and not email_paths:
        return opened
    # inbox_paths refuses a batch given no source at all
    for path in inbox_paths(inbox, email_paths):
        try:
            opened.append(await open_ticket(path))
        except UserInputError as exc:
            opened.append({"email": path, "error": str(exc)})
    return opened


async def _admit(ids: list[int], run: Callable[[int], Awaitable[dict[str, Any]]],
                 settle: Settle, progress: Progress) -> list[dict[str, Any] | BaseException]:
    """The tickets' runs, admitted in arrival order, up to the configured number at once
    (each customer's one after another; tasks.admission)."""
    width = deps().settings.orchestration.batch_in_flight
    if width > 1 and deps().settings.database.url.get_secret_value().startswith("sqlite"):
        get_run_logger().warning(
            "BILLING_RECON_BATCH_IN_FLIGHT=%d with a SQLite billing database: its one writer "
            "makes the tickets wait for each other", width)

    async def one(ticket_id: int) -> dict[str, Any]:
        try:
            result = await run(ticket_id)
        finally:  # its id has gone into its run
            forget_result(ticket_id)
        forget_result(result)  # kept below only to be returned
        return result

    senders = await in_thread(tickets.senders, deps().sessions, ids)
    return await admit([(i, senders[i]) for i in ids], width, one, settle, progress.advance)


async def _run_here(ids: list[int], wait_s: float, progress: Progress) -> list[Any]:
    """Subflows in this process; the next is admitted once one has finished or waits for a
    decision (see tasks.settle)."""
    async def run(ticket_id: int) -> dict[str, Any]:
        # its return value, not its final state's result: in a CI run under load the state
        # came back without its data for tickets that had run fine (error entries instead)
        return await process_ticket(ticket_id=ticket_id, approval_wait_s=wait_s)

    return await _admit(ids, run, settled, progress)


async def _fan_out(ids: list[int], wait_s: float, progress: Progress) -> list[Any]:
    """One process-ticket deployment run per ticket, executed in this process (tasks.fanout);
    a waiting ticket's run suspends, and a worker resumes it."""
    runs = await TicketRuns.start(process_ticket)

    async def run(ticket_id: int) -> dict[str, Any]:
        return await runs.run(ticket_id, wait_s)

    async def ended(_ticket_id: int, run: asyncio.Task[Any]) -> None:
        await asyncio.wait([run])  # a run here ends or suspends: either way it has settled

    return await _admit(ids, run, ended, progress)


@flow(name="reconcile-inbox", persist_result=False)
async def reconcile_inbox(
    inbox: str | None = None,
    email_paths: list[str] | None = None,
    from_table: bool = False,
    mailbox: bool = False,
    approval_wait_s: Annotated[float, Field(ge=0, le=30 * 86400)] = 3600.0,
    fan_out: bool = False,
) -> list[dict[str, Any]]:
    """Open one ticket per new email in arrival order, then run each ticket's flow.

    Deployed, every ticket gets its own process-ticket run, executed in this run's process
    one after another (a ticket waiting for approval is suspended and holds no process; a
    worker runs the rest once it is decided); locally, tickets run as subflows admitted one
    after another. Either way a ticket waiting for approval never holds up the next one, and
    approval-pending tickets past their deadline are escalated first.

    Args:
        inbox: Folder of .eml files on the worker; each email without a ticket becomes one.
            Deployed, a relative folder is taken under BILLING_RECON_INBOX_ROOT (default:
            BILLING_RECON_HOME) on the worker's host.
        email_paths: Explicit .eml paths, instead of or besides the folder.
        from_table: Also take stored emails without a ticket from the inbound-email table.
        mailbox: Also take the new messages of the IMAP folder (BILLING_RECON_IMAP_*): each
            ticket is committed before the message is marked on the server.
        approval_wait_s: Seconds a local run waits for each decision (at most 30 days);
            deployed runs suspend instead and free their worker.
        fan_out: Run every ticket as its own run of the ticket deployment
            (BILLING_RECON_TICKET_DEPLOYMENT) even when this run is local, as deployed runs
            always do: a waiting ticket suspends, and whoever serves that deployment (a
            worker, or the command line's local runner) runs it after the decision.
    """
    await sweep_overdue()
    opened = await _open_all(host_path(inbox), email_paths, from_table, mailbox)
    ids = [entry for entry in opened if isinstance(entry, int)]
    progress = await Progress.start(len(ids), "tickets started")
    run = _fan_out if fan_out or in_deployment() else _run_here
    ran = await run(ids, approval_wait_s, progress)
    started = iter(r if isinstance(r, dict) else {"ticket_id": tickets.format_ticket_id(i),
                                                  "error": repr(r)}
                   for i, r in zip(ids, ran, strict=True))
    if mail_on():  # replies and notices owed, each sent once
        await send_mail()
    # one result per email, in order: its ticket's, or why it has none
    return [next(started) if isinstance(entry, int) else entry for entry in opened]


if __name__ == "__main__":  # python flows/reconcile_inbox.py ... (see flows/local_run.py)
    from billing_recon_flows.local_run import main

    raise SystemExit(main(reconcile_inbox))
