"""Tasks for model spend: budget escalation, the global breaker's hold, the model-trace artifact."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import acreate_markdown_artifact
from prefect.logging import get_run_logger

from billing_recon.steps import budget, model_trace
from billing_recon.store import tickets
from billing_recon_tasks.options import ACTOR, STEP
from billing_recon_tasks.runtime import deps, in_thread


async def publish_model_trace(ticket_id: int, reason: str) -> None:
    """Every attempt's script, error and tokens, and every model call, as a markdown artifact."""
    data = await in_thread(model_trace.trace, deps(), ticket_id)
    await acreate_markdown_artifact(model_trace.markdown(ticket_id, reason, data),
                                    key=f"ticket-{ticket_id}-model-trace",
                                    description=f"{tickets.format_ticket_id(ticket_id)}: {reason}")


@task(name="escalate_over_budget", **STEP)
async def escalate_over_budget(ticket_id: int, message: str, details: dict[str, Any]) -> str:
    """ESCALATED(budget_exceeded): the refused call was not made; the trace is published."""
    ticket = await in_thread(budget.escalate_over_budget, deps(), ticket_id, ACTOR, message,
                             details)
    await publish_model_trace(ticket_id, "budget_exceeded")
    return ticket.state


@task(name="hold_for_breaker", **STEP)
async def hold_for_breaker(ticket_id: int, message: str, details: dict[str, Any]) -> None:
    """Leave the ticket where it is and say why; a later run resumes it."""
    await in_thread(budget.hold, deps(), ticket_id, ACTOR, message, details)
    get_run_logger().warning("%s waits: %s", tickets.format_ticket_id(ticket_id), message)
