"""Task fetch_invoices."""

from __future__ import annotations

from prefect import task

from billing_recon.steps import retrieval
from billing_recon_tasks.options import ACTOR, STEP
from billing_recon_tasks.runtime import deps, in_thread


@task(name="fetch_invoices", **STEP)
async def fetch_invoices(ticket_id: int) -> str:
    """TRIAGED -> DATA_FETCHED, REJECTED or DUPLICATE; returns the new state."""
    return (await in_thread(retrieval.fetch_invoices, deps(), ticket_id, ACTOR)).state
