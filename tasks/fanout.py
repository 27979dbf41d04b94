"""Deployed batches: every ticket's own process-ticket run, executed in the batch's process, and
escalation of overdue approvals.

A process worker starts every flow run in a new interpreter, which cost 3-4 s of CPU per ticket
before the run did anything (issue 15). The batch has all of it loaded already, so it creates
each ticket's run from the process-ticket deployment itself, in state Pending (workers only
claim Scheduled runs), and executes it here with Prefect's own engine, on a thread with its own
event loop and an empty context. It is then a top-level run of the deployment like before, not
a subflow: its task runs, logs and artifacts are its own, and a ticket that needs a decision
suspends as before (no process held; the UI form or `billing-recon approve` resumes it, and a
worker runs the rest). Tickets run one after another, in arrival order.

A run executed here carries the tag ``batch:<id of the batch run>``. Nobody reports such a run
if the batch process dies mid-ticket, so the next batch marks it Crashed when it never reached
a suspension and its batch is over, and runs the ticket again from its committed state.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.context import SettingsContext
from prefect.exceptions import ObjectNotFound, Pause
from prefect.flow_engine import run_flow
from prefect.states import Crashed, Pending

from billing_recon.domain.fsm import State as TicketState
from billing_recon.domain.fsm import is_terminal
from billing_recon.steps import approval_gate
from billing_recon.store import tickets
from billing_recon_tasks.context import flow_run_id
from billing_recon_tasks.events import emit_escalated
from billing_recon_tasks.options import ACTOR
from billing_recon_tasks.runtime import deps, in_thread

ACTIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED,
          StateType.CANCELLING]
BATCH_TAG = "batch:"


def ticket_deployment() -> str:
    """The deployment that runs one ticket (``flow-name/deployment-name``)."""
    return deps().settings.orchestration.ticket_deployment


def batch_of(run: FlowRun) -> UUID | None:
    """The batch run that executed ``run`` in its own process, if one did."""
    for tag in run.tags:
        if tag.startswith(BATCH_TAG):
            try:
                return UUID(tag.removeprefix(BATCH_TAG))
            except ValueError:
                continue
    return None


async def orphaned(client: PrefectClient, run: FlowRun) -> bool:
    """Whether a batch executed ``run``, died before the run ended or suspended, and is over."""
    batch = batch_of(run)
    if batch is None or run.state is None or run.empirical_policy.pause_keys:
        return False  # not ours, or suspended once: a worker runs it since its resumption
    if not (run.state.is_pending() or run.state.is_running()):
        return False
    try:
        executor = await client.read_flow_run(batch)
    except ObjectNotFound:
        return True
    return executor.state is None or executor.state.is_final()


async def _has_active_run(client: PrefectClient, tag: str, opened: datetime) -> bool:
    """Whether a live run holds the ticket opened at ``opened``; orphans of dead batches are
    marked Crashed. A run created before the ticket existed is another ticket's with the same
    number: another billing database on the same Prefect server (a demo run again on a fresh
    database while the managed server keeps the last one's paused runs). It is left alone."""
    flow_runs = FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]),
                              state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ACTIVE)))
    live = False
    for run in await client.read_flow_runs(flow_run_filter=flow_runs):
        if run.created is not None and run.created < opened:
            continue
        if await orphaned(client, run):
            await client.set_flow_run_state(run.id, Crashed(
                message="The batch process running it ended; a later batch ran the ticket "
                        "again from its committed state."), force=True)
        else:
            live = True
    return live


def _execute(flow: Flow[..., Any], flow_run: FlowRun,
             settings: SettingsContext | None) -> State[Any]:
    """Run ``flow_run`` with Prefect's engine (as `python -m prefect.engine` would) until it
    ends or suspends, on this thread's own event loop and in an empty context: the batch's run
    is not its parent (a parent would be told of its suspension) and the batch's API client
    belongs to another event loop. Prefect's settings are the batch's, including those its
    entry point applied in-process (tasks.client_settings)."""
    coroutine = cast(Coroutine[Any, Any, State[Any]],
                     run_flow(flow, flow_run=flow_run, return_type="state"))
    try:
        return contextvars.Context().run(_with_settings, settings, coroutine)
    except Pause as paused:  # suspended for a decision: its state says so
        return cast(State[Any], paused.state)


def _with_settings(settings: SettingsContext | None,
                   coroutine: Coroutine[Any, Any, State[Any]]) -> State[Any]:
    scope = nullcontext() if settings is None else SettingsContext(
        profile=settings.profile, settings=settings.settings)
    with scope:
        return asyncio.run(coroutine)


@dataclass(frozen=True)
class TicketRuns:
    """Runs of the ticket deployment that one batch executes in its own process."""

    flow: Flow[..., Any]
    deployment_id: UUID
    batch_tag: str

    @classmethod
    async def start(cls, flow: Flow[..., Any]) -> TicketRuns:
        """For the current batch run; the deployment must run ``flow``."""
        name = ticket_deployment()
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(name)
            deployed = await client.read_flow(deployment.flow_id)
        if deployed.name != flow.name:
            raise ValueError(f"deployment {name} runs flow {deployed.name!r}, not {flow.name!r}")
        return cls(flow, deployment.id, f"{BATCH_TAG}{flow_run_id()}")

    async def run(self, ticket_id: int, wait_s: float) -> dict[str, Any]:
        """Run the ticket here unless it is settled or a live run holds it; the ticket after."""
        ticket = await in_thread(tickets.get, deps().sessions, ticket_id)
        name = tickets.format_ticket_id(ticket_id)
        result: dict[str, Any] = {"ticket_id": name, "state": ticket.state}
        if is_terminal(TicketState(ticket.state)):
            return {**result, "skipped": "settled"}
        tag = f"ticket:{name}"
        async with get_client() as client:
            if await _has_active_run(client, tag, ticket.created_at):
                return {**result, "skipped": "a run is already active"}
            run = await client.create_flow_run_from_deployment(
                self.deployment_id, tags=[tag, self.batch_tag], state=Pending(),
                parameters={"ticket_id": ticket_id, "approval_wait_s": wait_s})
        loop = asyncio.get_running_loop()
        final = await loop.run_in_executor(None, _execute, self.flow, run,
                                           SettingsContext.get())
        ticket = await in_thread(tickets.get, deps().sessions, ticket_id)
        return {**result, "state": ticket.state, "flow_run_id": str(run.id),
                "run_state": final.name}


def _expire_overdue() -> list[int]:
    expired = []
    for ticket in tickets.in_state(deps().sessions, TicketState.APPROVAL_PENDING):
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
