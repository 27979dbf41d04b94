"""The ticket FSM of SPEC §2 refuses every transition its table does not list."""

from __future__ import annotations

import itertools

import pytest

from billing_recon.domain.fsm import (
    ESCALATION_REASONS,
    INTAKE_REASONS,
    TERMINAL,
    Reason,
    State,
    allowed_targets,
    check_transition,
)
from billing_recon.errors import IllegalTransition

LEGAL = {
    (State.RECEIVED, State.TRIAGED, None),
    (State.TRIAGED, State.CLOSED, Reason.NOT_BILLING),
    (State.TRIAGED, State.DATA_FETCHED, None),
    (State.TRIAGED, State.REJECTED, Reason.UNKNOWN_SENDER),
    (State.TRIAGED, State.REJECTED, Reason.INVOICE_NOT_OWNED),
    (State.TRIAGED, State.REJECTED, Reason.INVOICE_NOT_FOUND),
    (State.TRIAGED, State.DUPLICATE, Reason.DUPLICATE),
    (State.DATA_FETCHED, State.ANALYZED, None),
    (State.ANALYZED, State.CLOSED, Reason.NO_DISCREPANCY),
    (State.ANALYZED, State.APPROVAL_PENDING, None),
    (State.ANALYZED, State.DUPLICATE, Reason.DUPLICATE),
    (State.APPROVAL_PENDING, State.APPROVED, None),
    (State.APPROVAL_PENDING, State.REJECTED_BY_APPROVER, Reason.REJECTED_BY_APPROVER),
    (State.APPROVED, State.REFUNDED, None),
    (State.REFUNDED, State.CLOSED, Reason.REFUNDED),
    (State.ESCALATED, State.RECEIVED, Reason.REOPENED),
    (State.REFUNDED, State.ESCALATED, Reason.REFUND_FAILED),
    (State.CLOSED, State.ESCALATED, Reason.REFUND_FAILED),
} | {(s, State.ESCALATED, r) for s in State if s not in TERMINAL for r in ESCALATION_REASONS} | {
    (State.RECEIVED, State.REJECTED, r) for r in INTAKE_REASONS}


@pytest.mark.parametrize(("source", "target", "reason"), sorted(LEGAL, key=str))
def test_listed_transition_is_allowed(source: State, target: State, reason: Reason | None) -> None:
    check_transition(source, target, reason)


def test_every_unlisted_transition_raises() -> None:
    refused = 0
    for source, target, reason in itertools.product(State, State, [None, *Reason]):
        if (source, target, reason) in LEGAL:
            continue
        with pytest.raises(IllegalTransition):
            check_transition(source, target, reason)
        refused += 1
    assert refused > 1000


@pytest.mark.parametrize("state", sorted(TERMINAL - {State.ESCALATED, State.CLOSED}))
def test_terminal_states_have_no_way_out(state: State) -> None:
    assert allowed_targets(state) == []


def test_a_closed_ticket_leaves_closed_only_when_its_refund_failed() -> None:
    """Stripe can fail a refund days after it succeeded: CLOSED(refunded) must not stay."""
    assert allowed_targets(State.CLOSED) == [State.ESCALATED]
    check_transition(State.CLOSED, State.ESCALATED, Reason.REFUND_FAILED)
    with pytest.raises(IllegalTransition):
        check_transition(State.CLOSED, State.ESCALATED, Reason.INTERNAL_ERROR)


def test_money_never_moves_without_approval() -> None:
    assert [s for s in State if State.REFUNDED in allowed_targets(s)] == [State.APPROVED]
    assert [s for s in State if State.APPROVED in allowed_targets(s)] == [State.APPROVAL_PENDING]
