"""Flow reconcile-inbox: every email of a folder (or a list) through process-ticket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client

from billing_recon.domain.fsm import State
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


async def _paused(flow_run_id: str | None) -> bool:
    if flow_run_id is None:
        return False
    async with get_client() as client:
        run = await client.read_flow_run(UUID(flow_run_id))
    return run.state is not None and run.state.is_paused()


async def settled(ticket_id: int, run: asyncio.Task[Any]) -> None:
    """Wait until the ticket's run has finished or is paused for a decision.

    Starting the next run only then keeps writes to the Prefect server sequential: a
    SQLite-backed server answers concurrent state writes with 503s and 2 s client backoffs.
    """
    while not run.done():
        ticket = await in_thread(tickets.get, deps().sessions, ticket_id)
        if ticket.state == State.APPROVAL_PENDING.value and await _paused(ticket.flow_run_id):
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
