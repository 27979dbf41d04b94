"""The refunds ledger: one row per gateway idempotency key (an exactly-once layer).

Two tables work together. ``refunds`` (the billing schema's) holds executed refunds, written
with the ticket's move to REFUNDED. ``refund_calls`` (created here, outside the migrations) is
the write-ahead half: a call is claimed *before* the gateway is asked, so a worker that finds a
claim it does not hold knows a refund may already exist. A claim held by a live worker is
``busy``; one older than the lease belonged to a worker that died (``stale``): the caller must
look the refund up at the gateway before calling again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection, Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billing_recon.domain.refund_status import UNDONE, WAITING, RefundStatus
from billing_recon.store.leases import ensure_tables
from billing_recon.store.models import Refund

metadata = sa.MetaData()
calls = sa.Table(
    "refund_calls",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("ticket_id", sa.Integer, nullable=False),
    sa.Column("payment_id", sa.String(64), nullable=False),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("claimed_at", sa.Float, nullable=False),
    sa.Column("gateway_refund_id", sa.String(128), nullable=True),
)

ClaimStatus = Literal["new", "stale", "done", "busy"]


@dataclass(frozen=True)
class CallClaim:
    """What claiming a gateway call found: go ahead (new), look up first (stale), already
    answered (done, with the gateway's refund id) or someone else is calling (busy)."""

    status: ClaimStatus
    gateway_refund_id: str | None = None


def counted() -> ColumnElement[bool]:
    """The ledger rows that count as refunded: every status but failed and canceled (the
    money went back to the merchant), so a failed refund is owed again."""
    return Refund.status.not_in(sorted(UNDONE))


def find(session: Session, idempotency_key: str) -> Refund | None:
    """The ledger row of an idempotency key, if the refund was recorded."""
    return session.scalar(select(Refund).where(Refund.idempotency_key == idempotency_key))


def record(session: Session, *, idempotency_key: str, payment_id: str, amount: Decimal,
           currency: str, ticket_id: int, gateway_refund_id: str, at: datetime,
           status: RefundStatus = RefundStatus.SUCCEEDED,
           failure_reason: str | None = None) -> Refund:
    """Insert the refund unless its key is already recorded (then return that row)."""
    existing = find(session, idempotency_key)
    if existing is not None:
        return existing
    row = Refund(refund_id=gateway_refund_id, payment_id=payment_id, amount=amount,
                 currency=currency, refunded_at=at, idempotency_key=idempotency_key,
                 ticket_id=ticket_id, gateway_refund_id=gateway_refund_id,
                 status=status.value, failure_reason=failure_reason, status_at=at)
    session.add(row)
    session.flush()
    return row


def of_ticket(session: Session, ticket_id: int) -> list[Refund]:
    """The refunds a ticket made, every attempt, oldest first."""
    return list(session.scalars(select(Refund).where(Refund.ticket_id == ticket_id)
                                .order_by(Refund.refunded_at, Refund.refund_id)))


def by_gateway_id(session: Session, gateway_refund_id: str) -> Refund | None:
    """The ledger row of a gateway refund, locked for update (its status may change)."""
    return session.scalar(select(Refund).where(Refund.gateway_refund_id == gateway_refund_id)
                          .with_for_update())


def failed_attempts(session: Session, ticket_id: int, payment_id: str) -> int:
    """How many of the ticket's refunds of this payment failed or were canceled."""
    return len(list(session.scalars(select(Refund.refund_id).where(
        Refund.ticket_id == ticket_id, Refund.payment_id == payment_id,
        Refund.status.in_(sorted(UNDONE))))))


def unsettled(session: Session, succeeded_since: datetime) -> list[Refund]:
    """The refunds this system made whose status may still change: waiting ones, and
    succeeded ones younger than the late-failure window (Stripe can still fail them)."""
    waiting = Refund.status.in_(sorted(WAITING))
    recent = (Refund.status == RefundStatus.SUCCEEDED.value) & (
        Refund.refunded_at >= succeeded_since)
    return list(session.scalars(select(Refund).where(
        Refund.gateway_refund_id.is_not(None), waiting | recent)
        .order_by(Refund.refunded_at, Refund.refund_id)))


def unescalated_failures(session: Session) -> list[int]:
    """Tickets with a failed or canceled refund they were not escalated for yet."""
    return sorted({t for t in session.scalars(select(Refund.ticket_id).where(
        Refund.ticket_id.is_not(None), Refund.status.in_(sorted(UNDONE)),
        Refund.failure_escalated_at.is_(None))) if t is not None})


def all_refunds(session: Session) -> list[Refund]:
    """Every refund in the ledger, loaded history included, oldest first."""
    return list(session.scalars(select(Refund).order_by(Refund.refunded_at, Refund.refund_id)))


def claim_call(engine: Engine, key: str, *, ticket_id: int, payment_id: str, holder: str,
               lease_s: float, clock: Callable[[], float] = time.time,
               guard: Callable[[Connection], None] | None = None) -> CallClaim:
    """Claim the gateway call of ``key`` for ``holder`` before making it.

    ``guard`` runs first in the claim's own transaction (it takes its locks there) and may
    raise to refuse a new claim; an existing claim of the key is not re-checked.
    """
    ensure_tables(engine, metadata)
    now = clock()
    try:
        with engine.begin() as conn:
            if guard is not None and not _exists(conn, key):
                guard(conn)
            conn.execute(calls.insert().values(key=key, ticket_id=ticket_id,
                                               payment_id=payment_id, holder=holder,
                                               claimed_at=now))
        return CallClaim("new")
    except IntegrityError:
        pass
    with engine.connect() as conn:
        row = conn.execute(calls.select().where(calls.c.key == key)).first()
    if row is None:  # released between our INSERT and SELECT: try once more later
        return CallClaim("busy")
    if row.gateway_refund_id is not None:
        return CallClaim("done", row.gateway_refund_id)
    if row.holder != holder and row.claimed_at > now - lease_s:
        return CallClaim("busy")
    return CallClaim("stale") if _take_over(engine, row, holder, now) else CallClaim("busy")


def _exists(conn: Connection, key: str) -> bool:
    return conn.execute(sa.select(calls.c.key).where(calls.c.key == key)).first() is not None


def _take_over(engine: Engine, row: sa.Row[Any], holder: str, now: float) -> bool:
    # Guarded on the old holder and time: of two workers taking over at once, one wins.
    with engine.begin() as conn:
        taken = conn.execute(
            calls.update()
            .where(calls.c.key == row.key, calls.c.holder == row.holder,
                   calls.c.claimed_at == row.claimed_at, calls.c.gateway_refund_id.is_(None))
            .values(holder=holder, claimed_at=now))
    return taken.rowcount == 1


def finish_call(engine: Engine, key: str, gateway_refund_id: str) -> None:
    """Remember the gateway's answer, so a re-run adopts it without asking again."""
    with engine.begin() as conn:
        conn.execute(calls.update()
                     .where(calls.c.key == key, calls.c.gateway_refund_id.is_(None))
                     .values(gateway_refund_id=gateway_refund_id))


def release_call(engine: Engine, key: str, holder: str) -> None:
    """Drop our claim after an answer that created nothing (a 4xx), so a re-run may call."""
    with engine.begin() as conn:
        conn.execute(calls.delete().where(calls.c.key == key, calls.c.holder == holder,
                                          calls.c.gateway_refund_id.is_(None)))
