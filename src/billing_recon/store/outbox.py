"""The outbox: emails to send exactly once, with a claim like the refund's (issue 17).

A row is queued once per key (unique). A sender claims one row at a time with a conditional
UPDATE (queued, or claimed by a sender whose lease ended), commits ``sending`` immediately
before the SMTP DATA command, and ``sent`` once the server accepted it. See
``models.OutboxMessage`` and docs/exactly-once.md for what each crash point leaves.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from billing_recon.store.models import OutboxMessage
from billing_recon.store.tickets import Sessions
from billing_recon.store.types import utcnow

QUEUED, CLAIMED, SENDING, SENT = "queued", "claimed", "sending", "sent"
UNCERTAIN, FAILED = "uncertain", "failed"


def queue(sessions: Sessions, row: OutboxMessage) -> bool:
    """Queue a message; False when its key is queued already (nothing changes)."""
    if has_key(sessions, row.key):
        return False
    try:
        with sessions() as session, session.begin():
            session.add(row)
    except IntegrityError:
        return False  # queued by a concurrent sender
    return True


def claim(sessions: Sessions, holder: str, lease_s: float,
          now: datetime | None = None) -> OutboxMessage | None:
    """Claim the oldest due message for ``holder`` until the lease ends: a queued one, or one
    claimed by a sender whose lease ended before it started sending. None: nothing due."""
    now = now or utcnow()
    due = or_(OutboxMessage.status == QUEUED,
              (OutboxMessage.status == CLAIMED) & (OutboxMessage.lease_until < now))
    with sessions() as session:
        candidates = list(session.scalars(select(OutboxMessage.id).where(due)
                                          .order_by(OutboxMessage.id).limit(20)))
    for row_id in candidates:
        with sessions() as session, session.begin():
            won = session.execute(
                update(OutboxMessage).where(OutboxMessage.id == row_id, due)
                .values(status=CLAIMED, holder=holder,
                        lease_until=now + timedelta(seconds=lease_s),
                        attempts=OutboxMessage.attempts + 1)).rowcount  # type: ignore[attr-defined]
        if won == 1:
            with sessions() as session:
                return session.get(OutboxMessage, row_id)
    return None


def move(sessions: Sessions, row_id: int, holder: str, source: str, target: str,
         **values: Any) -> bool:
    """``source`` -> ``target`` if ``holder`` still holds the row (its claim not taken over)."""
    with sessions() as session, session.begin():
        done = session.execute(
            update(OutboxMessage).where(OutboxMessage.id == row_id,
                                        OutboxMessage.holder == holder,
                                        OutboxMessage.status == source)
            .values(status=target, **values)).rowcount  # type: ignore[attr-defined]
    return bool(done == 1)


def stale_sending(sessions: Sessions, now: datetime | None = None) -> list[OutboxMessage]:
    """Rows left ``sending`` by a sender whose lease ended: it died around DATA."""
    now = now or utcnow()
    with sessions() as session:
        return list(session.scalars(select(OutboxMessage).where(
            OutboxMessage.status == SENDING, OutboxMessage.lease_until < now)))


def requeue(sessions: Sessions, key: str) -> bool:
    """An operator's decision: send an uncertain or failed message again."""
    with sessions() as session, session.begin():
        done = session.execute(
            update(OutboxMessage).where(OutboxMessage.key == key,
                                        OutboxMessage.status.in_([UNCERTAIN, FAILED]))
            .values(status=QUEUED, holder=None, lease_until=None)).rowcount  # type: ignore[attr-defined]
    return bool(done == 1)


def rows(sessions: Sessions, ticket_id: int | None = None) -> list[OutboxMessage]:
    """Every message (of one ticket), oldest first."""
    with sessions() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        if ticket_id is not None:
            query = query.where(OutboxMessage.ticket_id == ticket_id)
        return list(session.scalars(query))


def has_key(sessions: Sessions, key: str) -> bool:
    """Whether a message with this key was queued (whatever became of it)."""
    with sessions() as session:
        return session.scalar(select(OutboxMessage.id).where(OutboxMessage.key == key)) \
            is not None
