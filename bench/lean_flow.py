"""A measured proposal (bench only): process-ticket with the automatic steps in one task.

The shipped flow runs one Prefect task per step (triage, fetch, each analysis attempt,
verify), so the Prefect UI shows every step and retries each analysis attempt. This variant
runs them as a single task around ``billing_recon.pipeline.advance`` (the same core code, the
same capped self-correction, every attempt still in the ticket's event log) and then waits for
the decision exactly like the shipped flow. It trades per-step task runs in the UI for fewer
task runs per ticket; bench/run.py measures what that buys.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from billing_recon import pipeline
from billing_recon.domain.fsm import State
from billing_recon.store import tickets
from billing_recon_tasks.approval import wait_for_decision
from billing_recon_tasks.intake import open_ticket
from billing_recon_tasks.options import ACTOR, STEP
from billing_recon_tasks.runtime import deps, in_thread


@task(name="advance_ticket", **STEP)
async def advance_ticket(ticket_id: int) -> str:
    """Every automatic step up to the approval gate (or the end), in one task run."""
    return (await in_thread(pipeline.advance, deps(), ticket_id, ACTOR)).state


@flow(name="process-ticket-lean", persist_result=False)
async def process_ticket_lean(email_path: str, approval_wait_s: float = 3600.0
                              ) -> dict[str, Any]:
    """One email until it waits for a decision or ends."""
    ticket_id = await open_ticket(email_path)
    state = await advance_ticket(ticket_id)
    if state == State.APPROVAL_PENDING.value:
        await wait_for_decision(ticket_id, approval_wait_s)
    ticket = await in_thread(tickets.get, deps().sessions, ticket_id)
    return {"ticket_id": tickets.format_ticket_id(ticket_id), "state": ticket.state}
