"""What one refund call produced: the gateway's refund and its status when we learnt of it.

``RefundOutcome`` is the refund step's result (cached by Prefect, then written to the ledger
with the ticket's move to REFUNDED).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from billing_recon.payments.refunds import GatewayRefund
from billing_recon.store.types import utcnow


class Answer(BaseModel):
    """The gateway's refund for one call, when we learnt of it, and its status then (None:
    adopted from a claim, still to be read from the gateway)."""

    model_config = ConfigDict(frozen=True)
    gateway_refund_id: str
    refunded_at: datetime
    status: str | None = None
    failure_reason: str | None = None

    @classmethod
    def now(cls, gateway_refund_id: str, found: GatewayRefund | None = None) -> Answer:
        """An answer received (or found) just now."""
        return cls(gateway_refund_id=gateway_refund_id, refunded_at=utcnow(),
                   status=found.status if found else None,
                   failure_reason=found.failure_reason if found else None)


class RefundOutcome(Answer):
    """What one gateway call refunded: the ledger row written with the move to REFUNDED."""

    payment_id: str
    amount: Decimal
    currency: str
    idempotency_key: str
