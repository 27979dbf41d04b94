"""Which step advances each ticket state: the state machine's runner table, defined once.

The plain pipeline (``billing_recon.pipeline``) and the Prefect flow
(``flows/process_ticket.py``) both dispatch through ``STEP_OF`` and both stop after
``MAX_STEPS``. The flow runs every step, each as a Prefect task; the pipeline runs only the
``AUTOMATIC`` ones and stops where a human must act.
"""

from __future__ import annotations

from enum import StrEnum

from billing_recon.domain.fsm import State

#: Steps one run may take at most: every step moves the ticket on, so more means a bug.
MAX_STEPS = 50


class Step(StrEnum):
    """A step of the pipeline, named as its task is."""

    TRIAGE = "triage_email"
    FETCH = "fetch_invoices"
    RECONCILE = "reconcile"  # capped self-correcting attempts, then verify_proposal
    CONCLUDE = "advance_analyzed"  # ANALYZED -> APPROVAL_PENDING, CLOSED or DUPLICATE
    DECIDE = "wait_for_decision"  # a human decides (UI form or CLI)
    REFUND = "execute_refund"  # the non-agentic refund worker, then record_refunds
    CLOSE = "settle_refunds"  # REFUNDED -> CLOSED(refunded) once every refund succeeded


STEP_OF: dict[State, Step] = {
    State.RECEIVED: Step.TRIAGE,
    State.TRIAGED: Step.FETCH,
    State.DATA_FETCHED: Step.RECONCILE,
    State.ANALYZED: Step.CONCLUDE,
    State.APPROVAL_PENDING: Step.DECIDE,
    State.APPROVED: Step.REFUND,
    State.REFUNDED: Step.CLOSE,
}

#: The steps that need no human: what the plain pipeline runs.
AUTOMATIC = frozenset({Step.TRIAGE, Step.FETCH, Step.RECONCILE, Step.CONCLUDE})


def next_step(state: State) -> Step | None:
    """The step that advances ``state``; None for a terminal state."""
    return STEP_OF.get(state)
