"""Admission control for local batches: start the next ticket once the previous one settled."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client

from billing_recon.domain.fsm import State
from billing_recon.store import tickets
from billing_recon_tasks.runtime import deps, in_thread

SETTLE_POLL_S = 0.05


async def _paused(flow_run_id: str | None) -> bool:
    if flow_run_id is None:
        return False
    async with get_client() as client:
        run = await client.read_flow_run(UUID(flow_run_id))
    return run.state is not None and run.state.is_paused()


async def settled(ticket_id: int, run: asyncio.Task[Any]) -> None:
    """Wait until the ticket's run has finished or is paused for a decision.

    Starting the next run only then keeps writes to the Prefect server sequential: a
    SQLite-backed server answers concurrent state writes with 503s and 2 s client backoffs.
    """
    while not run.done():
        ticket = await in_thread(tickets.get, deps().sessions, ticket_id)
        if ticket.state == State.APPROVAL_PENDING.value and await _paused(ticket.flow_run_id):
            return
        await asyncio.sleep(SETTLE_POLL_S)
