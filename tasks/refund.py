"""Tasks of the refund step: execute_refund (the Prefect layer of exactly-once), record_refunds
and settle_refunds.

The Prefect layer is a cache on the ticket key with SERIALIZABLE isolation: concurrent runs of
one ticket wait on the key's lock (an expiring lease, tasks/locks.py) and the later ones read
the first one's result instead of calling the gateway. A marker task cached on the same key
records that an attempt started: a run that finds another attempt's marker but no cached
result knows that attempt may have reached the gateway before dying, and asks the worker to
look each refund up first. Both keys carry the attempt (how many of the ticket's refunds
failed): a retry after a failed refund is a new attempt, never answered from the first one's
cache.
"""

from __future__ import annotations

import secrets
from typing import Any

from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.context import TaskRunContext

from billing_recon.payments.layers import Layer
from billing_recon.steps import refund_status, refund_worker
from billing_recon.steps.refund_outcome import RefundOutcome
from billing_recon_tasks.locks import LeaseLockManager
from billing_recon_tasks.options import ACTOR, STEP
from billing_recon_tasks.runtime import deps, in_thread

WORKER = "refund_worker"


def _attempt(parameters: dict[str, Any]) -> str:
    attempt = int(parameters.get("attempt", 0))
    return "" if attempt == 0 else f"-retry{attempt}"


def refund_cache_key(_context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """One cached refund result per ticket key (and retry): the Prefect layer of
    exactly-once."""
    return f"execute-refund-{parameters['ticket_key']}{_attempt(parameters)}"


def attempt_cache_key(_context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """One attempt marker per ticket key (and retry): the first attempt's id, kept forever."""
    return f"refund-attempt-{parameters['ticket_key']}{_attempt(parameters)}"


REFUND_POLICY = CacheKeyFnPolicy(cache_key_fn=refund_cache_key).configure(
    lock_manager=LeaseLockManager(), isolation_level="SERIALIZABLE")


@task(name="start_refund_attempt", cache_key_fn=attempt_cache_key, persist_result=True,
      result_serializer="json")
async def start_refund_attempt(ticket_key: str, run: str, attempt: int = 0) -> str:
    """Return ``run`` the first time for this ticket key, that first run's id after."""
    return run


@task(name="execute_refund", cache_policy=REFUND_POLICY, persist_result=True,
      result_serializer="json")
async def execute_refund_once(ticket_id: int, ticket_key: str, recovering: bool,
                              attempt: int = 0) -> list[RefundOutcome]:
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
    attempt = await in_thread(refund_worker.refund_attempt, deps(), ticket_id)
    run = secrets.token_hex(8)
    first = await start_refund_attempt(ticket_key, run, attempt)
    return await execute_refund_once(ticket_id, ticket_key, recovering=first != run,
                                     attempt=attempt)


@task(name="record_refunds", **STEP)
async def record_refunds(ticket_id: int, results: list[RefundOutcome]) -> str:
    """Ledger rows and APPROVED -> REFUNDED in one transaction."""
    return (await in_thread(refund_worker.record_refunds, deps(), ticket_id, results,
                            ACTOR)).state


@task(name="settle_refunds", **STEP)
async def settle_refunds(ticket_id: int) -> str:
    """Re-read the ticket's waiting refunds: REFUNDED -> CLOSED(refunded) with the customer
    reply once all succeeded, ESCALATED(refund_failed) once one failed; still REFUNDED while
    one is pending (the webhook receiver or the sweep settles it later)."""
    return (await in_thread(refund_status.settle_after_refund, deps(), ticket_id,
                            ACTOR)).state
