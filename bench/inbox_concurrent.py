"""A proposed batch configuration: reconcile-inbox with bounded concurrency (bench only).

Identical to flows/reconcile_inbox.py except for admission: tickets are still opened one after
another in arrival order, but up to ``max_concurrent`` process-ticket runs are in flight at
once instead of one (the shipped flow waits for each run to finish or pause before starting the
next, which a SQLite-backed Prefect server needs and a PostgreSQL-backed one does not).
Duplicate detection then follows claim order rather than arrival order for tickets in flight
together, which is why this stays a measured proposal here and not a change to the flow.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow

from billing_recon.store import tickets
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_flows.reconcile_inbox import inbox_paths
from billing_recon_tasks.intake import open_ticket


@flow(name="reconcile-inbox-concurrent", persist_result=False)
async def reconcile_inbox_concurrent(
    inbox: str | None = None,
    email_paths: list[str] | None = None,
    approval_wait_s: float = 3600.0,
    max_concurrent: int = 8,
) -> list[dict[str, Any]]:
    """Open one ticket per email in order, then run up to ``max_concurrent`` tickets at once."""
    ids = [await open_ticket(path) for path in inbox_paths(inbox, email_paths)]
    gate = asyncio.Semaphore(max_concurrent)

    async def one(ticket_id: int) -> dict[str, Any]:
        async with gate:
            return await process_ticket(ticket_id=ticket_id, approval_wait_s=approval_wait_s)

    results = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
    return [r if isinstance(r, dict) else {"ticket_id": tickets.format_ticket_id(i),
                                            "error": repr(r)}
            for i, r in zip(ids, results, strict=True)]
