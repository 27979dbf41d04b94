"""A refund's status as Stripe reports it, and which of two statuses is the newer.

Stripe's refund lifecycle: a refund is created ``pending`` (bank debits, some wallets), or
``requires_action``, or at once ``succeeded``; a pending one settles to ``succeeded`` or
``failed``; a ``requires_action`` one may be ``canceled``; and a ``succeeded`` refund can still
become ``failed`` days later (a closed or stolen card). ``failed`` and ``canceled`` are final:
the money went back to the merchant's balance, not to the customer.

Webhook events arrive late, twice and out of order, so a status is only ever replaced by a
*later* one in this order: waiting (pending, requires_action) < succeeded < failed/canceled.
"""

from __future__ import annotations

from enum import StrEnum


class RefundStatus(StrEnum):
    """Stripe's ``refund.status``."""

    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


#: The money did not reach the customer: the refund does not count as refunded.
UNDONE: frozenset[RefundStatus] = frozenset({RefundStatus.FAILED, RefundStatus.CANCELED})
#: Not settled yet either way.
WAITING: frozenset[RefundStatus] = frozenset({RefundStatus.PENDING,
                                              RefundStatus.REQUIRES_ACTION})

_STAGE = {RefundStatus.PENDING: 0, RefundStatus.REQUIRES_ACTION: 0, RefundStatus.SUCCEEDED: 1,
          RefundStatus.FAILED: 2, RefundStatus.CANCELED: 2}


def parse(value: str | None) -> RefundStatus:
    """Stripe's status string; an unknown one is refused (ValueError), never guessed."""
    return RefundStatus(value or "")


def replaces(new: RefundStatus, old: RefundStatus) -> bool:
    """Whether ``new`` may overwrite ``old``: it is later in the lifecycle (a stale event's
    status never overwrites a newer one), or the other of the two waiting statuses."""
    if _STAGE[new] != _STAGE[old]:
        return _STAGE[new] > _STAGE[old]
    return new != old and new in WAITING
