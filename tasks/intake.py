"""Tasks open_ticket and triage_email."""

from __future__ import annotations

from prefect import task

from billing_recon.steps import intake
from billing_recon_tasks.options import ACTOR, STEP
from billing_recon_tasks.runtime import deps, host_path, in_thread


@task(name="open_ticket", **STEP)
async def open_ticket(email_path: str) -> int:
    """The ticket id of this email (a new ticket, or the one it already has; REJECTED at once
    when the email is refused at intake)."""
    return (await in_thread(intake.open_file, deps(), host_path(email_path))).ticket.id


@task(name="triage_email", **STEP)
async def triage_email(ticket_id: int) -> str:
    """RECEIVED -> TRIAGED (-> CLOSED when not about billing); returns the new state."""
    return (await in_thread(intake.run_triage, deps(), ticket_id, ACTOR)).state


@task(name="open_tickets_from_table", **STEP)
async def open_tickets_from_table() -> list[int]:
    """Tickets for every stored inbound email that has none yet, in arrival order."""
    return await in_thread(intake.open_from_table, deps())
