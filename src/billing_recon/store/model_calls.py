"""Model-call repository: recorded answers (replay on re-run), per-ticket and recent spend."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from billing_recon.store.models import ModelCall, TicketEvent
from billing_recon.store.new_rows import insert_new
from billing_recon.store.tickets import Sessions

#: What makes a call the same call: asked once per ticket, agent and input.
_KEY = ("ticket_id", "agent", "input_hash")
#: Tokens used by the calls a query selects (0 for none).
_TOKENS = func.coalesce(func.sum(ModelCall.prompt_tokens + ModelCall.completion_tokens), 0)


@dataclass(frozen=True)
class Spend:
    """Calls made and tokens used."""

    calls: int
    tokens: int


def _recorded(ticket_id: int, agent: str, input_hash: str) -> Select[tuple[ModelCall]]:
    return select(ModelCall).where(ModelCall.ticket_id == ticket_id, ModelCall.agent == agent,
                                   ModelCall.input_hash == input_hash)


def add_within(session: Session, call: dict[str, Any]) -> int:
    """Record a call (``ModelCall``'s columns) inside the caller's transaction; its id. If a
    concurrent run recorded the same input first, theirs is kept and its id returned (one
    statement when there is none: ``store.new_rows``)."""
    added = session.scalar(insert_new(session, ModelCall, call, _KEY).returning(ModelCall.id))
    if added is not None:
        return added
    found = session.scalar(_recorded(call["ticket_id"], call["agent"], call["input_hash"]))
    if found is None:  # recorded calls are never deleted: theirs must be there
        raise LookupError(f"model call {call['input_hash']} skipped but not found")
    return found.id


def of_ticket(sessions: Sessions, ticket_id: int) -> list[ModelCall]:
    """Every recorded call of a ticket, oldest first."""
    with sessions() as session:
        return list(session.scalars(select(ModelCall).where(ModelCall.ticket_id == ticket_id)
                                    .order_by(ModelCall.id)))


def ticket_spend(sessions: Sessions, ticket_id: int) -> Spend:
    """Calls and tokens a ticket has used so far."""
    with sessions() as session:
        calls, tokens = session.execute(select(func.count(ModelCall.id), _TOKENS)
                                        .where(ModelCall.ticket_id == ticket_id)).one()
    return Spend(int(calls), int(tokens))


@dataclass(frozen=True)
class Reading:
    """What a model call is checked against, read in one statement: the ticket's spend, and
    every ticket's tokens and model escalations in the breaker's window."""

    spend: Spend
    tokens_since: int
    escalations_since: int


def find_or_read(sessions: Sessions, ticket_id: int, agent: str, input_hash: str,
                 since: datetime, reasons: Iterable[str]) -> ModelCall | Reading:
    """The recorded call of this ticket with this exact input, else (none) what a new call is
    checked against: the ticket's spend, and every ticket's tokens and model escalations (of
    ``reasons``) since ``since``. One session: one transaction's begin and end for both."""
    with sessions() as session:
        found = session.scalar(_recorded(ticket_id, agent, input_hash))
        return found if found is not None else _reading(session, ticket_id, since, reasons)


def _reading(session: Session, ticket_id: int, since: datetime,
             reasons: Iterable[str]) -> Reading:
    calls, tokens, window_tokens, escalations = session.execute(select(
        select(func.count(ModelCall.id)).where(ModelCall.ticket_id == ticket_id)
        .scalar_subquery(),
        select(_TOKENS).where(ModelCall.ticket_id == ticket_id).scalar_subquery(),
        select(_TOKENS).where(ModelCall.created_at >= since).scalar_subquery(),
        select(func.count(TicketEvent.id)).where(*_escalated(since, reasons))
        .scalar_subquery())).one()
    return Reading(Spend(int(calls), int(tokens)), int(window_tokens or 0), int(escalations or 0))


def _escalated(since: datetime, reasons: Iterable[str]) -> tuple[Any, ...]:
    return (TicketEvent.to_state == "ESCALATED", TicketEvent.at >= since,
            TicketEvent.kind == "transition", TicketEvent.reason.in_(list(reasons)))
