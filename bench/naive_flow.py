"""The naive baseline: the same core steps in a Prefect flow written with library defaults.

A sync flow (so Prefect's flow-run heartbeat thread runs and is joined at the end) with one
default ``@task`` per step, run with a cold sandbox per analysis run (the bench sets
BILLING_RECON_SANDBOX_JOBS_PER_WORKER=1, so every run starts a fresh bubblewrap worker and
imports pandas again). It stops, like the shipped flow given ``approval_wait_s=0``, once the
ticket settles, after publishing the same two approval artifacts.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from billing_recon import pipeline, runtime
from billing_recon.domain.fsm import State
from billing_recon.errors import AnalysisFailed
from billing_recon.steps import intake, presentation, reconciliation, retrieval
from billing_recon.steps.reconciliation import Analysis
from billing_recon.store import tickets

ACTOR = "flow:naive"


@task
def open_ticket(email_path: str) -> int:
    """The ticket of this email."""
    return intake.open_file(runtime.build(), email_path).ticket.id


@task
def triage(ticket_id: int) -> str:
    """RECEIVED -> TRIAGED (or CLOSED)."""
    return intake.run_triage(runtime.build(), ticket_id, ACTOR).state


@task
def fetch_invoices(ticket_id: int) -> str:
    """TRIAGED -> DATA_FETCHED (or REJECTED / DUPLICATE)."""
    return retrieval.fetch_invoices(runtime.build(), ticket_id, ACTOR).state


@task(retries=3)
def analyse(ticket_id: int) -> Analysis:
    """One analysis attempt per try."""
    return reconciliation.analysis_attempt(runtime.build(), ticket_id, ACTOR)


@task
def verify(ticket_id: int, summary: Analysis) -> str:
    """Cross-check and propose."""
    return reconciliation.verify_proposal(runtime.build(), ticket_id, summary, ACTOR).state


@task
def trip(ticket_id: int, error: str) -> str:
    """ESCALATED(circuit_breaker)."""
    deps = runtime.build()
    return reconciliation.trip_circuit_breaker(deps, ticket_id, ACTOR, error).state


@task
def advance_analyzed(ticket_id: int) -> str:
    """ANALYZED -> APPROVAL_PENDING or CLOSED."""
    return reconciliation.advance_analyzed(runtime.build(), ticket_id, ACTOR).state


@task
def publish(ticket_id: int) -> None:
    """The approval artifacts the shipped flow publishes before it pauses."""
    ticket = tickets.get(runtime.build().sessions, ticket_id)
    name = tickets.format_ticket_id(ticket_id)
    create_markdown_artifact(presentation.proposal_markdown(ticket, "approve"),
                             key=f"ticket-{ticket_id}-proposal", description=name)
    create_table_artifact(presentation.proposal_rows(ticket), key=f"ticket-{ticket_id}-refunds",
                          description=name)


def _reconcile(ticket_id: int) -> None:
    try:
        summary = analyse(ticket_id)
    except AnalysisFailed as exc:
        trip(ticket_id, str(exc))
        return
    verify(ticket_id, summary)


@flow
def naive_process_ticket(email_path: str) -> str:
    """One email until it settles, a task per step."""
    ticket_id = open_ticket(email_path)
    for _ in range(pipeline.MAX_STEPS):
        ticket = tickets.get(runtime.build().sessions, ticket_id)
        state = State(ticket.state)
        if state is State.APPROVAL_PENDING:
            publish(ticket_id)
        if pipeline.settled(ticket):
            return ticket.state
        if state is State.RECEIVED:
            triage(ticket_id)
        elif state is State.TRIAGED:
            fetch_invoices(ticket_id)
        elif state is State.DATA_FETCHED:
            _reconcile(ticket_id)
        elif state is State.ANALYZED:
            advance_analyzed(ticket_id)
    raise RuntimeError(f"ticket {ticket_id} did not settle")
