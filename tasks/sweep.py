"""Task of the refund sweep: the core's ``refund_sync`` around one Prefect task."""

from __future__ import annotations

from typing import Any

from prefect import task

from billing_recon.steps import refund_sync
from billing_recon.store import tickets
from billing_recon_tasks.options import STEP
from billing_recon_tasks.runtime import deps, in_thread


@task(name="sync_refunds", **STEP)
async def sync_refunds() -> dict[str, Any]:
    """Re-read every refund that may still change and settle its ticket; what changed."""
    report = await in_thread(refund_sync.sync_once, deps())
    return {"checked": report.checked, "changed": report.changed, "errors": report.errors,
            "tickets": {tickets.format_ticket_id(t): s for t, s in report.moved.items()}}
