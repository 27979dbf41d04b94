"""Ticket repository: apply FSM transitions and append events atomically (tickets are opened
in store.inbox)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from billing_recon.domain.fsm import Reason, State, check_transition

# The ticket-id forms, re-exported for the store's callers (defined in domain.ticket_id).
from billing_recon.domain.ticket_id import format_ticket_id as format_ticket_id
from billing_recon.domain.ticket_id import parse_ticket_id as parse_ticket_id
from billing_recon.errors import ConcurrentTransition, UserInputError
from billing_recon.store.models import Ticket, TicketEvent, TicketKeyClaim
from billing_recon.store.new_rows import insert_new
from billing_recon.store.types import utcnow

Sessions = sessionmaker[Session]


def find_by_email(sessions: Sessions, email_id: str) -> Ticket | None:
    """The ticket of an email, if any."""
    with sessions() as session:
        return session.scalar(select(Ticket).where(Ticket.email_id == email_id))


def get(sessions: Sessions, ticket_id: int) -> Ticket:
    """Load a ticket or raise a user-facing error."""
    with sessions() as session:
        ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise UserInputError(f"no such ticket: {format_ticket_id(ticket_id)}")
    return ticket


def current(sessions: Sessions, ticket_id: int, known: Ticket | None) -> Ticket:
    """The ticket: ``known`` when the caller has it as its own last transition committed it
    (``transition`` returns that), else read. A concurrent change meanwhile is still caught
    by the next transition's ``expect`` guard and version lock."""
    if known is not None and known.id == ticket_id:
        return known
    return get(sessions, ticket_id)


def new_event(ticket_id: int, seq: int, kind: str, source: State | None, target: State | None,
              reason: Reason | None, actor: str, payload: dict[str, Any]) -> TicketEvent:
    """An event row of the ticket's log (the caller adds it in its transaction)."""
    return TicketEvent(ticket_id=ticket_id, seq=seq, kind=kind,
                       from_state=source.value if source else None,
                       to_state=target.value if target else None,
                       reason=reason.value if reason else None, actor=actor, payload=payload)


def _bump(session: Session, ticket: Ticket, values: dict[str, Any]) -> int:
    """Optimistic lock: advance the version only if nobody else did meanwhile.

    The row comes back with the UPDATE (RETURNING) and refreshes ``ticket``, so after the
    commit it holds exactly what a fresh read would (JSON round-tripped, timestamps as stored)
    without reading it again.
    """
    new_version = ticket.version + 1
    updated = session.scalars(
        update(Ticket)
        .where(Ticket.id == ticket.id, Ticket.version == ticket.version)
        .values(version=new_version, updated_at=utcnow(), **values)
        .returning(Ticket),
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).all()
    if len(updated) != 1:
        raise ConcurrentTransition(f"{format_ticket_id(ticket.id)} changed concurrently")
    return new_version


def lock(session: Session, ticket_id: int, expect: State | None = None) -> Ticket:
    """The ticket's row, locked for the rest of the caller's transaction; ``expect``: the
    state it must be in (ConcurrentTransition otherwise: the caller read a stale ticket)."""
    ticket = session.get(Ticket, ticket_id, with_for_update=True)
    if ticket is None:
        raise UserInputError(f"no such ticket: {format_ticket_id(ticket_id)}")
    if expect is not None and ticket.state != expect.value:
        raise ConcurrentTransition(
            f"{format_ticket_id(ticket_id)} is {ticket.state}, expected {expect.value}")
    return ticket


def move_within(session: Session, ticket: Ticket, target: State, *, actor: str,
                reason: Reason | None = None, payload: dict[str, Any] | None = None,
                fields: dict[str, Any] | None = None) -> None:
    """Move a ticket the caller holds ``lock``ed, validated by the FSM, with its event, in
    the caller's transaction; ``ticket`` then holds what the commit will (``_bump``)."""
    source = State(ticket.state)
    check_transition(source, target, reason)
    values = {"state": target.value, "reason": reason.value if reason else None}
    seq = _bump(session, ticket, {**values, **(fields or {})})
    session.add(new_event(ticket.id, seq, "transition", source, target, reason, actor,
                          payload or {}))


def transition(
    sessions: Sessions,
    ticket_id: int,
    target: State,
    *,
    reason: Reason | None = None,
    actor: str,
    payload: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
    within: Callable[[Session, Ticket], None] | None = None,
    expect: State | None = None,
) -> Ticket:
    """Move a ticket, validated by the FSM, with its event in the same transaction; returns
    the ticket as committed.

    ``within`` runs extra writes (ledger rows, key claims) inside that transaction.
    ``expect`` guards against acting on a stale read: the move happens only from that state.
    """
    with sessions() as session, session.begin():
        ticket = lock(session, ticket_id, expect)
        check_transition(State(ticket.state), target, reason)
        if within is not None:
            within(session, ticket)
        move_within(session, ticket, target, actor=actor, reason=reason, payload=payload,
                    fields=fields)
    return ticket  # as committed (``_bump``): no read after the transition


def note_within(session: Session, ticket: Ticket, kind: str, actor: str,
                payload: dict[str, Any]) -> None:
    """Append a non-transition event inside the caller's transaction (which holds the ticket's
    row lock), advancing its version: for a write that must commit with other rows."""
    seq = _bump(session, ticket, {})
    session.add(new_event(ticket.id, seq, kind, None, None, None, actor, payload))


def note(sessions: Sessions, ticket_id: int, kind: str, actor: str,
         payload: dict[str, Any], fields: dict[str, Any] | None = None,
         within: Callable[[Session, Ticket], None] | None = None) -> None:
    """Append a non-transition event (an attempt, a refusal, a model call) to the log.

    ``within`` runs extra writes in the same transaction, before the event is written (it may
    add to ``payload``); it runs again if the transaction is retried.
    """
    for _ in range(5):  # a concurrent event only moves the sequence number: retry
        try:
            with sessions() as session, session.begin():
                ticket = session.get(Ticket, ticket_id, with_for_update=True)
                if ticket is None:
                    raise UserInputError(f"no such ticket: {format_ticket_id(ticket_id)}")
                if within is not None:
                    within(session, ticket)
                seq = _bump(session, ticket, fields or {})
                session.add(new_event(ticket_id, seq, kind, None, None, None, actor, payload))
            return
        except (ConcurrentTransition, IntegrityError):
            continue
    raise ConcurrentTransition(f"could not log {kind} on {format_ticket_id(ticket_id)}")


def events(sessions: Sessions, ticket_id: int, kind: str | None = None) -> list[TicketEvent]:
    """The ticket's event log in order, optionally of one kind."""
    with sessions() as session:
        query = select(TicketEvent).where(TicketEvent.ticket_id == ticket_id)
        if kind is not None:
            query = query.where(TicketEvent.kind == kind)
        return list(session.scalars(query.order_by(TicketEvent.seq)))


def claim_key(session: Session, ticket_key: str, ticket_id: int) -> int:
    """Claim a ticket key inside the caller's transaction; returns the owner's ticket id (one
    statement when the key is free: ``store.new_rows``)."""
    claimed = session.scalar(insert_new(session, TicketKeyClaim, {
        "ticket_key": ticket_key, "ticket_id": ticket_id}, ["ticket_key"])
        .returning(TicketKeyClaim.ticket_id))
    if claimed is not None:
        return claimed
    owner = session.scalar(select(TicketKeyClaim.ticket_id).where(
        TicketKeyClaim.ticket_key == ticket_key))
    if owner is None:  # claims are never deleted: the owner's claim must be there
        raise ConcurrentTransition(f"ticket key {ticket_key} is claimed but has no owner")
    return owner


def in_state(sessions: Sessions, *states: State) -> list[Ticket]:
    """Tickets currently in any of ``states``, oldest first."""
    with sessions() as session:
        query = select(Ticket).where(Ticket.state.in_([s.value for s in states]))
        return list(session.scalars(query.order_by(Ticket.id)))


def count(sessions: Sessions) -> int:
    """Number of tickets."""
    with sessions() as session:
        return int(session.scalar(select(func.count(Ticket.id))) or 0)


def senders(sessions: Sessions, ticket_ids: list[int], chunk: int = 500) -> dict[int, str]:
    """Ticket id -> its sender's address, for the given tickets (a few statements per batch)."""
    found: dict[int, str] = {}
    with sessions() as session:
        for start in range(0, len(ticket_ids), chunk):
            part = ticket_ids[start:start + chunk]
            rows = session.execute(select(Ticket.id, Ticket.sender).where(Ticket.id.in_(part)))
            found.update((ticket_id, sender) for ticket_id, sender in rows)
    return found
