"""Flow reconcile-inbox: every email of a folder (or a list) through process-ticket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prefect import flow

from billing_recon.domain.fsm import State, is_terminal
from billing_recon.store import tickets
from flows.process_ticket import process_ticket
from tasks.intake import open_ticket
from tasks.runtime import deps, in_thread

SETTLE_POLL_S = 0.05


def inbox_paths(inbox: str | None, email_paths: list[str] | None) -> list[str]:
    """The emails to process: the given paths, or the folder's .eml files in name order."""
    if email_paths:
        return list(email_paths)
    if inbox is None:
        raise ValueError("reconcile_inbox needs inbox or email_paths")
    return [str(p) for p in sorted(Path(inbox).glob("*.eml"))]


async def settled(ticket_id: int, run: asyncio.Task[Any]) -> None:
    """Wait until the ticket waits for a decision, ends, or its run stops."""
    while not run.done():
        ticket = await in_thread(tickets.get, deps().sessions, ticket_id)
        state = State(ticket.state)
        if state is State.APPROVAL_PENDING or is_terminal(state):
            return
        await asyncio.sleep(SETTLE_POLL_S)


@flow(name="reconcile-inbox", persist_result=False)
async def reconcile_inbox(
    inbox: str | None = None,
    email_paths: list[str] | None = None,
    approval_wait_s: float = 3600.0,
) -> list[dict[str, Any]]:
    """Open one ticket per email in order, then run each ticket's flow.

    Tickets are admitted one after another (so duplicate detection follows arrival order), and
    a ticket waiting for approval never holds up the next one.
    """
    ids = [await open_ticket(path) for path in inbox_paths(inbox, email_paths)]
    runs: list[asyncio.Task[Any]] = []
    for ticket_id in ids:
        run = asyncio.create_task(process_ticket(ticket_id=ticket_id,
                                                 approval_wait_s=approval_wait_s))
        runs.append(run)
        await settled(ticket_id, run)
    results = await asyncio.gather(*runs, return_exceptions=True)
    return [r if isinstance(r, dict) else {"ticket_id": tickets.format_ticket_id(i),
                                            "error": repr(r)}
            for i, r in zip(ids, results, strict=True)]
