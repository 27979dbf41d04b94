"""Tasks execute_refund (cached on the ticket key), record_refunds and draft_reply."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from billing_recon.steps import refund_worker, reply
from tasks.intake import ACTOR
from tasks.options import STEP
from tasks.runtime import deps, in_thread


def refund_cache_key(_context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """One cached refund result per ticket key: the Prefect layer of exactly-once."""
    return f"execute-refund-{parameters['ticket_key']}"


@task(name="execute_refund", cache_key_fn=refund_cache_key, persist_result=True,
      result_serializer="json")
async def execute_refund(ticket_id: int, ticket_key: str) -> list[dict[str, Any]]:
    """Verify the approval token and call the gateway once per payment."""
    return await in_thread(refund_worker.execute_refund, deps(), ticket_id, "refund_worker")


@task(name="record_refunds", **STEP)
async def record_refunds(ticket_id: int, results: list[dict[str, Any]]) -> str:
    """Ledger rows and APPROVED -> REFUNDED in one transaction."""
    return (await in_thread(refund_worker.record_refunds, deps(), ticket_id, results,
                            ACTOR)).state


@task(name="draft_reply", **STEP)
async def draft_reply(ticket_id: int) -> str:
    """REFUNDED -> CLOSED(refunded) with the customer reply."""
    return (await in_thread(reply.close_refunded, deps(), ticket_id, ACTOR)).state
