"""How the local gateway plays Stripe after a refund's first answer: its lifecycle and events.

A configurable share of refunds starts ``pending`` (``pending_reason: processing``) and
settles ``settle_s`` later to ``succeeded`` or, for ``failure_share`` of them, to ``failed``
(``expired_or_canceled_card``); ``late_failure_share`` of the succeeded ones fail
``late_failure_s`` after that (``lost_or_stolen_card``). Which refund does what is decided when
it is created, from a hash of its idempotency key (or id), so a run is reproducible.

Every change is an event, stored in the gateway's database with the refund as it was then
(``refund.created``, ``refund.updated``, ``refund.failed``, ``charge.refund.updated``), and
delivered signed to the webhook endpoint the way Stripe does (``gateway_webhooks.py``): late,
retried with backoff, sometimes twice, sometimes out of order, and, for ``webhook_loss_share``
of them, never (the sweep must find those changes itself).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from billing_recon.domain.refund_status import RefundStatus

API_VERSION = "2025-01-27.acacia"
SETTLE_FAILURE = "expired_or_canceled_card"
LATE_FAILURE = "lost_or_stolen_card"


class Lifecycle(BaseModel):
    """What the local gateway does with refunds after its first answer (Stripe-like)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pending_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Local gateway: share of refunds that start "
        "pending (as bank debits do) instead of succeeding at once.")
    failure_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Local gateway: share of pending refunds "
        "that settle to failed (expired_or_canceled_card) instead of succeeded.")
    late_failure_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Local gateway: share of succeeded refunds "
        "that fail later (lost_or_stolen_card), as Stripe may report days after.")
    settle_s: float = Field(default=2.0, ge=0.0, description="Local gateway: seconds until a "
                            "pending refund settles.")
    late_failure_s: float = Field(default=5.0, ge=0.0, description="Local gateway: seconds "
                                  "after succeeding that a late failure happens.")
    webhook_retry_s: float = Field(
        default=1.0, gt=0.0, description="Local gateway: first retry of an undelivered "
        "webhook event after this many seconds, doubling each time (Stripe: hours, for 3 "
        "days).")
    webhook_reorder_s: float = Field(
        default=0.0, ge=0.0, description="Local gateway: each event waits up to this many "
        "seconds (at random) before its first delivery, so events arrive out of order.")
    webhook_duplicate_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Local gateway: share of delivered events "
        "sent a second time.")
    webhook_loss_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Local gateway: share of events never "
        "delivered (Stripe's retries running out); the sweep must find those changes.")


metadata = sa.MetaData()

#: The future of each refund, decided when it is created.
plans = sa.Table(
    "gateway_refund_plans",
    metadata,
    sa.Column("refund_id", sa.String(64), primary_key=True),
    sa.Column("settle_at", sa.Float, nullable=True),  # pending until then
    sa.Column("settle_to", sa.String(16), nullable=True),
    sa.Column("fail_at", sa.Float, nullable=True),  # a late failure after succeeding
    sa.Column("failure_reason", sa.String(64), nullable=True),
    sa.Column("failure_balance_transaction", sa.String(64), nullable=True),
)

events = sa.Table(
    "gateway_events",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False, index=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # waiting | delivered | lost
    sa.Column("next_attempt_at", sa.Float, nullable=True, index=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("deliveries", sa.Integer, nullable=False),
)


def draw(key: str, what: str) -> float:
    """A reproducible number in [0, 1) for one decision about one refund or event."""
    digest = hashlib.sha256(f"{what}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Plan:
    """A new refund's status and, if it is not final yet, what happens to it and when."""

    status: RefundStatus
    settle_at: float | None = None
    settle_to: RefundStatus | None = None
    fail_at: float | None = None


def plan_for(key: str, lifecycle: Lifecycle, now: float) -> Plan:
    """The fate of the refund created now under ``key`` (its idempotency key, else its id)."""
    late = draw(key, "late") < lifecycle.late_failure_share
    if draw(key, "pending") < lifecycle.pending_share:
        settle_at = now + lifecycle.settle_s
        fails = draw(key, "fails") < lifecycle.failure_share
        return Plan(RefundStatus.PENDING, settle_at,
                    RefundStatus.FAILED if fails else RefundStatus.SUCCEEDED,
                    None if fails or not late else settle_at + lifecycle.late_failure_s)
    return Plan(RefundStatus.SUCCEEDED, fail_at=now + lifecycle.late_failure_s if late else None)


def record_plan(conn: Connection, refund_id: str, plan: Plan) -> None:
    """Store a refund's plan (only a refund with a future has one)."""
    if plan.settle_at is None and plan.fail_at is None:
        return
    conn.execute(plans.insert().values(
        refund_id=refund_id, settle_at=plan.settle_at,
        settle_to=plan.settle_to.value if plan.settle_to else None, fail_at=plan.fail_at))


def publish(conn: Connection, types: list[str], refund: dict[str, Any], now: float,
            lifecycle: Lifecycle, previous: dict[str, Any] | None = None) -> None:
    """Store one event per type, each with the refund as it is now."""
    seq = conn.scalar(sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0))) or 0
    for offset, event_type in enumerate(types, start=1):
        event_id = "evt_" + secrets.token_hex(12)
        data: dict[str, Any] = {"object": refund}
        if previous:
            data["previous_attributes"] = previous
        body = {"id": event_id, "object": "event", "api_version": API_VERSION,
                "created": int(now), "type": event_type, "livemode": False,
                "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
                "data": data}
        lost = draw(event_id, "lost") < lifecycle.webhook_loss_share
        delay = draw(event_id, "delay") * lifecycle.webhook_reorder_s
        conn.execute(events.insert().values(
            id=event_id, seq=seq + offset, type=event_type, body=body,
            state="lost" if lost else "waiting", next_attempt_at=None if lost else now + delay,
            attempts=0, deliveries=0))


def plan_fields(conn: Connection, refund_ids: list[str]) -> dict[str, dict[str, Any]]:
    """What each refund's plan adds to its Stripe object (failure reason, pending reason)."""
    if not refund_ids:
        return {}
    rows = conn.execute(plans.select().where(plans.c.refund_id.in_(refund_ids)))
    return {row.refund_id: {"failure_reason": row.failure_reason,
                            "failure_balance_transaction": row.failure_balance_transaction,
                            "pending_reason": "processing" if row.settle_at else None}
            for row in rows}
