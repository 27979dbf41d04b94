"""Model-call repository: recorded answers (replay on re-run), per-ticket and recent spend."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from billing_recon.store.models import ModelCall, TicketEvent
from billing_recon.store.tickets import Sessions


@dataclass(frozen=True)
class Spend:
    """Calls made and tokens used."""

    calls: int
    tokens: int


def find(sessions: Sessions, ticket_id: int, agent: str, input_hash: str) -> ModelCall | None:
    """The recorded call of this ticket with this exact input, if any."""
    with sessions() as session:
        return session.scalar(select(ModelCall).where(
            ModelCall.ticket_id == ticket_id, ModelCall.agent == agent,
            ModelCall.input_hash == input_hash))


def add(sessions: Sessions, call: ModelCall) -> ModelCall:
    """Record a call; if a concurrent run recorded the same input first, theirs is kept."""
    try:
        with sessions() as session, session.begin():
            session.add(call)
        return call
    except IntegrityError:
        found = find(sessions, call.ticket_id, call.agent, call.input_hash)
        if found is None:
            raise
        return found


def of_ticket(sessions: Sessions, ticket_id: int) -> list[ModelCall]:
    """Every recorded call of a ticket, oldest first."""
    with sessions() as session:
        return list(session.scalars(select(ModelCall).where(ModelCall.ticket_id == ticket_id)
                                    .order_by(ModelCall.id)))


def ticket_spend(sessions: Sessions, ticket_id: int) -> Spend:
    """Calls and tokens a ticket has used so far."""
    with sessions() as session:
        calls, tokens = session.execute(select(
            func.count(ModelCall.id),
            func.coalesce(func.sum(ModelCall.prompt_tokens + ModelCall.completion_tokens), 0),
        ).where(ModelCall.ticket_id == ticket_id)).one()
    return Spend(int(calls), int(tokens))


@dataclass(frozen=True)
class Reading:
    """What a model call is checked against, read in one statement: the ticket's spend, and
    every ticket's tokens and model escalations in the breaker's window."""

    spend: Spend
    tokens_since: int
    escalations_since: int


def reading(sessions: Sessions, ticket_id: int, since: datetime,
            reasons: Iterable[str]) -> Reading:
    """``ticket_spend``, ``tokens_since`` and ``escalations_since`` in one round trip."""
    used = func.coalesce(func.sum(ModelCall.prompt_tokens + ModelCall.completion_tokens), 0)
    with sessions() as session:
        calls, tokens, window_tokens, escalations = session.execute(select(
            select(func.count(ModelCall.id)).where(ModelCall.ticket_id == ticket_id)
            .scalar_subquery(),
            select(used).where(ModelCall.ticket_id == ticket_id).scalar_subquery(),
            select(used).where(ModelCall.created_at >= since).scalar_subquery(),
            select(func.count(TicketEvent.id)).where(*_escalated(since, reasons))
            .scalar_subquery())).one()
    return Reading(Spend(int(calls), int(tokens)), int(window_tokens or 0), int(escalations or 0))


def tokens_since(sessions: Sessions, since: datetime) -> int:
    """Tokens used by every ticket since ``since``."""
    with sessions() as session:
        total = session.scalar(select(func.coalesce(
            func.sum(ModelCall.prompt_tokens + ModelCall.completion_tokens), 0))
            .where(ModelCall.created_at >= since))
    return int(total or 0)


def escalations_since(sessions: Sessions, since: datetime, reasons: Iterable[str]) -> int:
    """Tickets escalated for one of ``reasons`` since ``since``."""
    with sessions() as session:
        count = session.scalar(select(func.count(TicketEvent.id))
                               .where(*_escalated(since, reasons)))
    return int(count or 0)


def _escalated(since: datetime, reasons: Iterable[str]) -> tuple[Any, ...]:
    return (TicketEvent.to_state == "ESCALATED", TicketEvent.at >= since,
            TicketEvent.kind == "transition", TicketEvent.reason.in_(list(reasons)))
