"""The refunds ledger: one row per gateway idempotency key (an exactly-once layer)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing_recon.store.models import Refund


def find(session: Session, idempotency_key: str) -> Refund | None:
    """The ledger row of an idempotency key, if the refund was recorded."""
    return session.scalar(select(Refund).where(Refund.idempotency_key == idempotency_key))


def record(session: Session, *, idempotency_key: str, payment_id: str, amount: Decimal,
           currency: str, ticket_id: int, gateway_refund_id: str, at: datetime) -> Refund:
    """Insert the refund unless its key is already recorded (then return that row)."""
    existing = find(session, idempotency_key)
    if existing is not None:
        return existing
    row = Refund(refund_id=gateway_refund_id, payment_id=payment_id, amount=amount,
                 currency=currency, refunded_at=at, idempotency_key=idempotency_key,
                 ticket_id=ticket_id, gateway_refund_id=gateway_refund_id)
    session.add(row)
    session.flush()
    return row


def all_refunds(session: Session) -> list[Refund]:
    """Every refund in the ledger, loaded history included, oldest first."""
    return list(session.scalars(select(Refund).order_by(Refund.refunded_at, Refund.refund_id)))
