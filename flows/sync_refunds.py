"""Flow sync-refunds: the sweep for lost webhooks, on a schedule (deployments/prefect.yaml).

Every refund that is not final is re-read from the gateway and applied, with the same
effects as the webhook receiver: tickets whose refunds all succeeded close (reply drafted),
tickets with a failed refund escalate (and announce it, like any escalation).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from billing_recon.domain.fsm import State
from billing_recon.store import tickets
from billing_recon_tasks.events import emit_escalated
from billing_recon_tasks.mail import mail_on, send_mail
from billing_recon_tasks.runtime import deps, in_thread
from billing_recon_tasks.sweep import sync_refunds as sync_refunds_task


@flow(name="sync-refunds", persist_result=False)
async def sync_refunds() -> dict[str, Any]:
    """Re-read every refund whose status may still change and settle its ticket."""
    report = await sync_refunds_task()
    for name, state in report["tickets"].items():
        if state.startswith(State.ESCALATED.value):
            ticket = await in_thread(tickets.get, deps().sessions, tickets.parse_ticket_id(name))
            emit_escalated(ticket)
    if mail_on() and report["tickets"]:  # replies of tickets closed now, notices of escalations
        await send_mail()
    get_run_logger().info("%s refunds re-read, %s changed; tickets moved: %s",
                          report["checked"], report["changed"], report["tickets"] or "none")
    return report


if __name__ == "__main__":  # python flows/sync_refunds.py: one sweep now
    import asyncio

    from billing_recon_tasks.temporary_server import ensure_api

    ensure_api()
    print(asyncio.run(sync_refunds()))
