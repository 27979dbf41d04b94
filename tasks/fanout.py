"""Deployed batches: one process-ticket run per ticket, and escalation of overdue approvals."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.deployments.flow_runs import arun_deployment

from billing_recon.domain.fsm import State, is_terminal
from billing_recon.steps import approval_gate
from billing_recon.store import tickets
from billing_recon_tasks.events import emit_escalated
from billing_recon_tasks.options import ACTOR
from billing_recon_tasks.runtime import deps, in_thread

ACTIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED,
          StateType.CANCELLING]


def ticket_deployment() -> str:
    """The deployment that runs one ticket (``flow-name/deployment-name``)."""
    return deps().settings.orchestration.ticket_deployment


async def _has_active_run(tag: str) -> bool:
    flow_runs = FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]),
                              state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ACTIVE)))
    async with get_client() as client:
        return bool(await client.read_flow_runs(flow_run_filter=flow_runs, limit=1))


async def start_ticket_run(ticket_id: int, wait_s: float) -> dict[str, Any]:
    """Start the ticket's own run unless it is settled, waiting for a decision or running."""
    ticket = await in_thread(tickets.get, deps().sessions, ticket_id)
    name = tickets.format_ticket_id(ticket_id)
    result: dict[str, Any] = {"ticket_id": name, "state": ticket.state}
    if is_terminal(State(ticket.state)) or ticket.state == State.APPROVAL_PENDING.value:
        return {**result, "skipped": "settled or awaiting a decision"}
    tag = f"ticket:{name}"
    if await _has_active_run(tag):
        return {**result, "skipped": "a run is already active"}
    # Not a subflow of the batch: Prefect cannot suspend subflows, and a ticket must outlive
    # the batch that started it.
    run = await arun_deployment(ticket_deployment(), timeout=0, tags=[tag], as_subflow=False,
                                parameters={"ticket_id": ticket_id, "approval_wait_s": wait_s})
    return {**result, "flow_run_id": str(run.id)}


def _expire_overdue() -> list[int]:
    expired = []
    for ticket in tickets.in_state(deps().sessions, State.APPROVAL_PENDING):
        if approval_gate.expire_if_due(deps(), ticket.id, ACTOR):
            expired.append(ticket.id)
    return expired


async def sweep_overdue() -> list[int]:
    """ESCALATED(approval_timeout) for every ticket past its approval deadline (a suspended
    run is not alive to notice), with the escalation event of each."""
    expired = await in_thread(_expire_overdue)
    for ticket_id in expired:
        emit_escalated(await in_thread(tickets.get, deps().sessions, ticket_id))
    return expired
