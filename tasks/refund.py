"""Tasks of the refund step: execute_refund (the Prefect layer of exactly-once), record_refunds
and draft_reply.

The Prefect layer is a cache on the ticket key with SERIALIZABLE isolation: concurrent runs of
one ticket wait on the key's lock (an expiring lease, tasks/locks.py) and the later ones read
the first one's result instead of calling the gateway. A marker task cached on the same key
records that an attempt started: a run that finds another attempt's marker but no cached
result knows that attempt may have reached the gateway before dying, and asks the worker to
look each refund up first.
"""

from __future__ import annotations

import secrets
from typing import Any

from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.context import TaskRunContext

from billing_recon.errors import ConcurrentTransition
from billing_recon.payments.layers import Layer
from billing_recon.steps import refund_worker, reply
from billing_recon.steps.refund_worker import RefundOutcome
from billing_recon.store import tickets
from billing_recon_tasks.locks import LeaseLockManager
from billing_recon_tasks.options import ACTOR, STEP
from billing_recon_tasks.runtime import deps, in_thread

WORKER = "refund_worker"


def refund_cache_key(_context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """One cached refund result per ticket key: the Prefect layer of exactly-once."""
    return f"execute-refund-{parameters['ticket_key']}"


def attempt_cache_key(_context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """One attempt marker per ticket key: the first attempt's id, kept forever."""
    return f"refund-attempt-{parameters['ticket_key']}"


REFUND_POLICY = CacheKeyFnPolicy(cache_key_fn=refund_cache_key).configure(
    lock_manager=LeaseLockManager(), isolation_level="SERIALIZABLE")


@task(name="start_refund_attempt", cache_key_fn=attempt_cache_key, persist_result=True,
      result_serializer="json")
async def start_refund_attempt(ticket_key: str, attempt: str) -> str:
    """Return ``attempt`` the first time for this ticket key, that first attempt's id after."""
    return attempt


@task(name="execute_refund", cache_policy=REFUND_POLICY, persist_result=True,
      result_serializer="json")
async def execute_refund_once(ticket_id: int, ticket_key: str,
                              recovering: bool) -> list[RefundOutcome]:
    """Verify the approval token and refund each payment, once per ticket key."""
    return await in_thread(refund_worker.execute_refund, deps(), ticket_id, WORKER,
                           recovering=recovering)


@task(name="execute_refund_uncached", **STEP)
async def execute_refund_uncached(ticket_id: int, ticket_key: str) -> list[RefundOutcome]:
    """The refund step with the Prefect layer switched off (tests of the other layers)."""
    return await in_thread(refund_worker.execute_refund, deps(), ticket_id, WORKER)


async def execute_refund(ticket_id: int, ticket_key: str) -> list[RefundOutcome]:
    """Refund each payment of an approved ticket exactly once (the flow's refund step)."""
    if not deps().switches.on(Layer.CACHE):
        return await execute_refund_uncached(ticket_id, ticket_key)
    attempt = secrets.token_hex(8)
    first = await start_refund_attempt(ticket_key, attempt)
    return await execute_refund_once(ticket_id, ticket_key, recovering=first != attempt)


@task(name="record_refunds", **STEP)
async def record_refunds(ticket_id: int, results: list[RefundOutcome]) -> str:
    """Ledger rows and APPROVED -> REFUNDED in one transaction."""
    return (await in_thread(refund_worker.record_refunds, deps(), ticket_id, results,
                            ACTOR)).state


@task(name="draft_reply", **STEP)
async def draft_reply(ticket_id: int) -> str:
    """REFUNDED -> CLOSED(refunded) with the customer reply."""
    try:
        return (await in_thread(reply.close_refunded, deps(), ticket_id, ACTOR)).state
    except ConcurrentTransition:
        # Another run of this ticket closed it first: report the state it reached.
        return (await in_thread(tickets.get, deps().sessions, ticket_id)).state
