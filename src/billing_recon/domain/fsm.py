"""The ticket finite state machine of SPEC §2: states, reasons and the transition table."""

from __future__ import annotations

from enum import StrEnum

from billing_recon.errors import IllegalTransition


class State(StrEnum):
    """Every state a ticket can be in."""

    RECEIVED = "RECEIVED"
    TRIAGED = "TRIAGED"
    DATA_FETCHED = "DATA_FETCHED"
    ANALYZED = "ANALYZED"
    APPROVAL_PENDING = "APPROVAL_PENDING"
    APPROVED = "APPROVED"
    REFUNDED = "REFUNDED"
    CLOSED = "CLOSED"
    REJECTED = "REJECTED"
    REJECTED_BY_APPROVER = "REJECTED_BY_APPROVER"
    DUPLICATE = "DUPLICATE"
    ESCALATED = "ESCALATED"


class Reason(StrEnum):
    """Why a ticket reached a closing, rejecting or escalating state."""

    NOT_BILLING = "not_billing"
    NO_DISCREPANCY = "no_discrepancy"
    REFUNDED = "refunded"
    UNKNOWN_SENDER = "unknown_sender"
    INVOICE_NOT_OWNED = "invoice_not_owned"
    INVOICE_NOT_FOUND = "invoice_not_found"
    # Refused at intake, before any model reads the email (issue 14).
    EMAIL_TOO_LARGE = "email_too_large"
    UNREADABLE_EMAIL = "unreadable_email"
    INVALID_SENDER = "invalid_sender"
    DUPLICATE = "duplicate"
    REJECTED_BY_APPROVER = "rejected_by_approver"
    CIRCUIT_BREAKER = "circuit_breaker"
    BUDGET_EXCEEDED = "budget_exceeded"
    CROSS_CHECK_MISMATCH = "cross_check_mismatch"
    APPROVAL_TIMEOUT = "approval_timeout"
    POLICY_VIOLATION = "policy_violation"
    INTERNAL_ERROR = "internal_error"
    REFUND_FAILED = "refund_failed"
    REOPENED = "reopened"


TERMINAL: frozenset[State] = frozenset(
    {State.CLOSED, State.REJECTED, State.REJECTED_BY_APPROVER, State.DUPLICATE, State.ESCALATED}
)

ESCALATION_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.CIRCUIT_BREAKER,
        Reason.BUDGET_EXCEEDED,
        Reason.CROSS_CHECK_MISMATCH,
        Reason.APPROVAL_TIMEOUT,
        Reason.POLICY_VIOLATION,
        Reason.INTERNAL_ERROR,
    }
)

#: Why an email is refused as it arrives: it is never triaged.
INTAKE_REASONS: frozenset[Reason] = frozenset(
    {Reason.EMAIL_TOO_LARGE, Reason.UNREADABLE_EMAIL, Reason.INVALID_SENDER}
)

# (source, target) -> reasons allowed on that edge; an empty set means "no reason".
_EDGES: dict[tuple[State, State], frozenset[Reason]] = {
    (State.RECEIVED, State.TRIAGED): frozenset(),
    (State.RECEIVED, State.REJECTED): INTAKE_REASONS,
    (State.TRIAGED, State.CLOSED): frozenset({Reason.NOT_BILLING}),
    (State.TRIAGED, State.DATA_FETCHED): frozenset(),
    (State.TRIAGED, State.REJECTED): frozenset(
        {Reason.UNKNOWN_SENDER, Reason.INVOICE_NOT_OWNED, Reason.INVOICE_NOT_FOUND}
    ),
    (State.TRIAGED, State.DUPLICATE): frozenset({Reason.DUPLICATE}),
    (State.DATA_FETCHED, State.ANALYZED): frozenset(),
    (State.ANALYZED, State.CLOSED): frozenset({Reason.NO_DISCREPANCY}),
    (State.ANALYZED, State.APPROVAL_PENDING): frozenset(),
    # Every refundable amount is already proposed or refunded by other tickets (SPEC §5).
    (State.ANALYZED, State.DUPLICATE): frozenset({Reason.DUPLICATE}),
    (State.APPROVAL_PENDING, State.APPROVED): frozenset(),
    (State.APPROVAL_PENDING, State.REJECTED_BY_APPROVER): frozenset({Reason.REJECTED_BY_APPROVER}),
    (State.APPROVED, State.REFUNDED): frozenset(),
    (State.REFUNDED, State.CLOSED): frozenset({Reason.REFUNDED}),
    (State.ESCALATED, State.RECEIVED): frozenset({Reason.REOPENED}),
}
for _state in State:
    if _state not in TERMINAL:
        _EDGES[(_state, State.ESCALATED)] = ESCALATION_REASONS
# A refund failed or was canceled (Stripe may report it days after it succeeded): never
# CLOSED while the money did not arrive; a CLOSED(refunded) ticket leaves CLOSED for it.
_EDGES[(State.REFUNDED, State.ESCALATED)] = ESCALATION_REASONS | {Reason.REFUND_FAILED}
_EDGES[(State.CLOSED, State.ESCALATED)] = frozenset({Reason.REFUND_FAILED})


def check_transition(source: State, target: State, reason: Reason | None) -> None:
    """Raise IllegalTransition unless the table allows source -> target with this reason."""
    allowed = _EDGES.get((source, target))
    if allowed is None:
        raise IllegalTransition(source.value, target.value)
    if (reason is None) != (not allowed) or (reason is not None and reason not in allowed):
        shown = f"{target.value}({reason.value if reason else ''})"
        raise IllegalTransition(source.value, shown)


def allowed_targets(source: State) -> list[State]:
    """States reachable from ``source`` in one step (for docs and tests)."""
    return [target for (src, target) in _EDGES if src == source]


def is_terminal(state: State) -> bool:
    """Whether no further transition is expected (ESCALATED may be re-opened by an operator)."""
    return state in TERMINAL
