"""The local gateway's refunds settling over time, and its events waiting for delivery.

``settle_due`` applies every plan whose time has come (gateway_lifecycle.py): a pending refund
becomes succeeded or failed, a succeeded one fails late. A failed refund gives its amount back
to the charge (``amount_refunded`` drops, as on Stripe the money returns to the merchant's
balance, with a ``failure_balance_transaction``). Each change publishes its events in the same
transaction. The gateway runs it before answering a read and on its own ticker, so the API
always shows the truth at the moment it is asked.
"""

from __future__ import annotations

import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from billing_recon.domain.refund_status import RefundStatus
from billing_recon.payments import gateway_lifecycle as lc
from billing_recon.payments.gateway_store import GatewayStore, charges, refunds

CLAIM_S = 30.0  # a delivery claimed by a sender that died is retried after this long
MAX_BACKOFF_S = 3600.0


def settle_due(store: GatewayStore) -> int:
    """Apply every plan that is due; how many refunds changed."""
    now = store.clock()
    with store.engine.connect() as conn:
        due = [str(r) for r in conn.scalars(sa.select(lc.plans.c.refund_id).where(
            ((lc.plans.c.settle_at.is_not(None)) & (lc.plans.c.settle_at <= now))
            | ((lc.plans.c.fail_at.is_not(None)) & (lc.plans.c.fail_at <= now))))]
    return sum(_settle_one(store, refund_id, now) for refund_id in due)


def _settle_one(store: GatewayStore, refund_id: str, now: float) -> bool:
    with store.engine.begin() as conn:
        plan = conn.execute(lc.plans.select().where(lc.plans.c.refund_id == refund_id)
                            .with_for_update()).first()
        refund = conn.execute(refunds.select().where(refunds.c.id == refund_id)).first()
        if plan is None or refund is None:
            return False
        if plan.settle_at is not None and plan.settle_at <= now:
            target, reason = RefundStatus(plan.settle_to), lc.SETTLE_FAILURE
            conn.execute(lc.plans.update().where(lc.plans.c.refund_id == refund_id)
                         .values(settle_at=None))
        elif plan.fail_at is not None and plan.fail_at <= now:
            target, reason = RefundStatus.FAILED, lc.LATE_FAILURE
            conn.execute(lc.plans.update().where(lc.plans.c.refund_id == refund_id)
                         .values(fail_at=None))
        else:
            return False  # settled by another process meanwhile
        _move(store, conn, refund, target, reason, now)
    return True


def _move(store: GatewayStore, conn: Connection, refund: Any, target: RefundStatus,
          reason: str, now: float) -> None:
    """One refund's status change, its charge's balance and its events, in ``conn``."""
    previous = {"status": refund.status}
    conn.execute(refunds.update().where(refunds.c.id == refund.id).values(status=target.value))
    types = ["refund.updated", "charge.refund.updated"]
    if target is RefundStatus.FAILED:
        conn.execute(charges.update().where(charges.c.id == refund.charge_id)
                     .values(amount_refunded=charges.c.amount_refunded - refund.amount))
        conn.execute(lc.plans.update().where(lc.plans.c.refund_id == refund.id).values(
            failure_reason=reason,
            failure_balance_transaction="txn_" + secrets.token_hex(12)))
        types.insert(1, "refund.failed")
    current = store.get_refund_in(conn, refund.id)
    lc.publish(conn, types, current, now, store.lifecycle, previous)


def claim_due_events(store: GatewayStore, limit: int = 50) -> list[dict[str, Any]]:
    """Events due for a delivery attempt, oldest first, each claimed for ``CLAIM_S`` (two
    gateway processes may share a database; a claim that is never finished is retried)."""
    now = store.clock()
    with store.engine.connect() as conn:
        due = list(conn.execute(
            sa.select(lc.events.c.id, lc.events.c.next_attempt_at, lc.events.c.body)
            .where(lc.events.c.next_attempt_at <= now)
            .order_by(lc.events.c.next_attempt_at, lc.events.c.seq).limit(limit)))
    claimed = []
    for row in due:
        with store.engine.begin() as conn:
            taken = conn.execute(lc.events.update().where(
                lc.events.c.id == row.id, lc.events.c.next_attempt_at == row.next_attempt_at)
                .values(next_attempt_at=now + CLAIM_S, attempts=lc.events.c.attempts + 1))
        if taken.rowcount == 1:
            claimed.append(dict(row.body))
    return claimed


def delivered(store: GatewayStore, event_id: str) -> None:
    """The endpoint answered 2xx; a share of events is sent once more (Stripe duplicates)."""
    now = store.clock()
    with store.engine.begin() as conn:
        row = conn.execute(lc.events.select().where(lc.events.c.id == event_id)).first()
        if row is None:
            return
        again = row.deliveries == 0 and lc.draw(event_id, "duplicate") < (
            store.lifecycle.webhook_duplicate_share)
        later = now + 0.2 + lc.draw(event_id, "again") * store.lifecycle.webhook_reorder_s
        conn.execute(lc.events.update().where(lc.events.c.id == event_id).values(
            state="delivered", deliveries=row.deliveries + 1,
            next_attempt_at=later if again else None))


def undelivered(store: GatewayStore, event_id: str) -> None:
    """No 2xx: retry with exponential backoff (Stripe retries for three days)."""
    now = store.clock()
    with store.engine.begin() as conn:
        row = conn.execute(lc.events.select().where(lc.events.c.id == event_id)).first()
        if row is None:
            return
        wait = min(MAX_BACKOFF_S, store.lifecycle.webhook_retry_s * 2 ** (row.attempts - 1))
        conn.execute(lc.events.update().where(lc.events.c.id == event_id)
                     .values(next_attempt_at=now + wait))
