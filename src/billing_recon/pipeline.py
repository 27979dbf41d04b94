"""The core pipeline called directly, without Prefect: an email up to its approval gate.

The same steps, in the same order and with the same capped self-correction, as the
process-ticket flow, but as plain function calls: it is the baseline that says what the
orchestration costs (bench/), and a way to run tickets where no Prefect is wanted. It stops
where a human must act (APPROVAL_PENDING) or the ticket ends; approval and refund stay with
the flow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from billing_recon.domain.fsm import State, is_terminal
from billing_recon.errors import (
    AnalysisExhausted,
    AnalysisFailed,
    BudgetExceeded,
    GlobalBreakerOpen,
)
from billing_recon.steps import budget, intake, reconciliation, retrieval
from billing_recon.steps.deps import Deps
from billing_recon.steps.machine import AUTOMATIC, MAX_STEPS, Step, next_step
from billing_recon.store import tickets
from billing_recon.store.models import Ticket

ACTOR = "pipeline"


def _reconcile(deps: Deps, ticket_id: int, actor: str, known: Ticket | None = None) -> Ticket:
    """Analysis attempts until one succeeds or the circuit breaker trips, then verify."""
    ticket = tickets.current(deps.sessions, ticket_id, known)
    error = "every analysis attempt failed"
    for _ in range(deps.settings.budgets.analysis_retries + 1):
        try:
            summary = reconciliation.analysis_attempt(deps, ticket_id, actor, known=ticket)
        except AnalysisExhausted as exc:
            error = str(exc)
            break
        except AnalysisFailed as exc:
            error = str(exc)
            continue
        return reconciliation.verify_proposal(deps, ticket_id, summary, actor, known=ticket)
    return reconciliation.trip_circuit_breaker(deps, ticket_id, actor, error)


class StepRun(Protocol):
    """A step: it moves the ticket on and returns it as its last transition committed it."""

    def __call__(self, deps: Deps, ticket_id: int, actor: str,
                 known: Ticket | None = None) -> Ticket: ...


STEPS: dict[Step, StepRun] = {
    Step.TRIAGE: intake.run_triage,
    Step.FETCH: retrieval.fetch_invoices,
    Step.RECONCILE: _reconcile,
    Step.CONCLUDE: reconciliation.advance_analyzed,
}


def step(deps: Deps, ticket: Ticket, actor: str = ACTOR) -> Ticket:
    """Advance a ticket by one state of the automatic part of the pipeline; the ticket as
    the step left it."""
    state = State(ticket.state)
    todo = next_step(state)
    if todo not in AUTOMATIC:
        raise ValueError(f"{tickets.format_ticket_id(ticket.id)} is {state.value}: "
                         "nothing automatic to do")
    return STEPS[todo](deps, ticket.id, actor, known=ticket)


def _take(deps: Deps, ticket: Ticket, actor: str) -> Ticket | None:
    """``take_step``, returning the ticket as it was left (None: held by the breaker)."""
    try:
        return step(deps, ticket, actor)
    except BudgetExceeded as exc:
        return budget.escalate_over_budget(deps, ticket.id, actor, str(exc), exc.details)
    except GlobalBreakerOpen as exc:
        budget.hold(deps, ticket.id, actor, str(exc), exc.details)
        return None


def take_step(deps: Deps, ticket: Ticket, actor: str = ACTOR) -> bool:
    """``step``, with what a refused model call means: over budget escalates the ticket;
    False when the global breaker holds it (its state is kept for a later call)."""
    return _take(deps, ticket, actor) is not None


def settled(ticket: Ticket) -> bool:
    """Whether the ticket has ended or waits for a human decision (or what follows it)."""
    state = State(ticket.state)
    return is_terminal(state) or next_step(state) not in AUTOMATIC


#: Told each step's wall time in seconds (the evaluation's per-step timings).
Observer = Callable[[Step, float], None]


def advance(deps: Deps, ticket_id: int, actor: str = ACTOR,
            observe: Observer | None = None, known: Ticket | None = None) -> Ticket:
    """Run a ticket from its committed state until it settles (or the global breaker holds it).

    A call over budget escalates the ticket; with the global breaker open the ticket keeps its
    state (a later call resumes it) and is returned as it is. ``observe`` is told each step
    taken and its wall time. ``known``: the ticket as the caller last committed it; each step
    then starts from the ticket the previous one committed, without reading it again (the
    transitions' ``expect`` guards and version lock still catch a concurrent change).
    """
    ticket = tickets.current(deps.sessions, ticket_id, known)
    for _ in range(MAX_STEPS):
        if settled(ticket):
            return ticket
        started, todo = time.perf_counter(), next_step(State(ticket.state))
        try:
            moved = _take(deps, ticket, actor)
        finally:
            if observe is not None and todo is not None:
                observe(todo, time.perf_counter() - started)
        if moved is None:
            return tickets.get(deps.sessions, ticket_id)
        ticket = moved
    raise RuntimeError(f"{tickets.format_ticket_id(ticket_id)} did not settle")


def process_email(deps: Deps, raw: bytes, source: str | None = None,
                  actor: str = ACTOR) -> Ticket:
    """Open (or resume) the ticket of a raw email and run it until it settles."""
    opened = intake.open_ticket(deps, raw, source)
    return advance(deps, opened.ticket.id, actor, known=opened.ticket)
