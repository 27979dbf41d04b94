"""The sample set's ground truth against a ticket: does the outcome equal what was planted?"""

from __future__ import annotations

from typing import Any

from billing_recon import reports
from billing_recon.domain.fsm import State
from billing_recon.store.models import Ticket

# Where a ticket expected to await approval may already be when the demo runs again.
AFTER_APPROVAL = {("APPROVAL_PENDING", None), ("APPROVED", None), ("REFUNDED", None),
                  ("CLOSED", "refunded"), ("REJECTED_BY_APPROVER", "rejected_by_approver"),
                  ("ESCALATED", "approval_timeout")}


def matches(expected: dict[str, Any], ticket: Ticket) -> bool:
    """Whether the ticket's state and proposal equal the ground truth."""
    if expected.get("refund") != reports.refund_summary(ticket):
        return False
    if expected["expected_state"] == State.APPROVAL_PENDING.value:
        return (ticket.state, ticket.reason) in AFTER_APPROVAL
    return (expected["expected_state"], expected.get("reason")) == (ticket.state, ticket.reason)
