"""Tasks reconcile (sandboxed, capped retries), verify_proposal and advance_analyzed."""

from __future__ import annotations

from typing import Any

from prefect import task

from billing_recon.domain.fsm import Reason
from billing_recon.steps import reconciliation
from billing_recon.steps.reconciliation import Analysis
from billing_recon_tasks.budget import publish_model_trace
from billing_recon_tasks.options import ACTOR, RECONCILE, STEP
from billing_recon_tasks.runtime import deps, in_thread


@task(name="reconcile", **RECONCILE)
async def reconcile_attempt(ticket_id: int) -> Analysis:
    """One self-correcting attempt per try; raises AnalysisFailed so Prefect retries it."""
    return await in_thread(reconciliation.analysis_attempt, deps(), ticket_id, ACTOR)


async def reconcile(ticket_id: int) -> Analysis:
    """The attempts, retried up to the settings' cap (the same cap the core enforces)."""
    retries = deps().settings.budgets.analysis_retries
    return await reconcile_attempt.with_options(retries=retries)(ticket_id)


@task(name="verify_proposal", **STEP)
async def verify_proposal(ticket_id: int, analysis: Analysis) -> str:
    """Cross-check against the trusted rules, then propose or close; returns the new state."""
    ticket = await in_thread(reconciliation.verify_proposal, deps(), ticket_id, analysis, ACTOR)
    return ticket.state


@task(name="advance_analyzed", **STEP)
async def advance_analyzed(ticket_id: int) -> str:
    """Finish a ticket left in ANALYZED by a crash."""
    return (await in_thread(reconciliation.advance_analyzed, deps(), ticket_id, ACTOR)).state


@task(name="escalate", **STEP)
async def escalate(ticket_id: int, reason: str, payload: dict[str, Any]) -> str:
    """Any non-terminal state -> ESCALATED(reason)."""
    ticket = await in_thread(reconciliation.escalate, deps(), ticket_id, Reason(reason), ACTOR,
                             payload)
    return ticket.state


@task(name="trip_circuit_breaker", **STEP)
async def trip_circuit_breaker(ticket_id: int, error: str) -> str:
    """ESCALATED(circuit_breaker) with every script, error and token count, also as an artifact."""
    ticket = await in_thread(reconciliation.trip_circuit_breaker, deps(), ticket_id, ACTOR, error)
    await publish_model_trace(ticket_id, "circuit_breaker")
    return ticket.state
