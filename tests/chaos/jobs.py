"""What a chaos worker process runs; imported once by the fork server, so each job forks warm.

A job is one attempt at a ticket in a fresh process: the whole ``process_ticket`` Prefect flow
(``flow``), the refund step's core functions with no Prefect at all (``core``), or a batch of
emails through the flow concurrently (``emails``). The parent may SIGKILL it at any moment, or
arm a kill point through ``BILLING_RECON_CHAOS_KILL_AT`` in its environment.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

# Preloaded by the fork server: every worker migrates its database on start.
import alembic.command
import alembic.runtime.migration  # noqa: F401
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_HOME,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_LOGGING_LEVEL,
    temporary_settings,
)

from billing_recon import runtime
from billing_recon.steps import refund_status, refund_sync, refund_worker
from billing_recon.store import tickets
from billing_recon_flows.process_ticket import process_ticket


@dataclass(frozen=True)
class Job:
    """One attempt: what to run and the environment to run it in."""

    kind: str  # flow | core | emails | flows | sweep
    env: dict[str, str]
    ticket_id: int | None = None
    emails: list[str] = field(default_factory=list)
    tickets: list[int] = field(default_factory=list)  # flows: these tickets' flows at once


def run_job(job: Job) -> None:
    """Entry point in the forked child; an exception or a kill is its exit status."""
    os.environ.update(job.env)
    if job.kind == "core":
        _core(job.ticket_id or 0)
        return
    if job.kind == "sweep":
        refund_sync.sync_once(runtime.build())
        return
    prefect = {PREFECT_API_URL: job.env["PREFECT_API_URL"],
               PREFECT_HOME: job.env["PREFECT_HOME"],
               PREFECT_LOCAL_STORAGE_PATH: job.env["PREFECT_LOCAL_STORAGE_PATH"],
               PREFECT_LOGGING_LEVEL: "ERROR"}
    with temporary_settings(prefect):
        asyncio.run(_flows(job))


async def _flows(job: Job) -> None:
    if job.kind == "flow":
        await process_ticket(ticket_id=job.ticket_id, approval_wait_s=0)
        return
    runs = ([process_ticket(ticket_id=t, approval_wait_s=0) for t in job.tickets]
            if job.kind == "flows" else
            [process_ticket(email_path=path, approval_wait_s=0) for path in job.emails])
    results: list[Any] = await asyncio.gather(*runs, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]


def _core(ticket_id: int) -> None:
    """The refund step without Prefect: the ledger and gateway layers only."""
    deps = runtime.build()
    if tickets.get(deps.sessions, ticket_id).state == "APPROVED":
        results = refund_worker.execute_refund(deps, ticket_id, "chaos-worker")
        refund_worker.record_refunds(deps, ticket_id, results, "chaos-worker")
    if tickets.get(deps.sessions, ticket_id).state == "REFUNDED":
        refund_status.settle_after_refund(deps, ticket_id, "chaos-worker")
