"""Inbound emails in the store: the inbox table, and the one ticket each email opens.

An email is found again by its identity (``domain.email.EmailIdentity``): under its Message-ID
when the ticket there has its sender, else under its sender id. So a different sender reusing
a Message-ID gets a ticket of its own (logged as a collision), while tickets opened before the
sender counted are still found for the same email.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billing_recon.domain.email import EmailIdentity, Rejection, parse_email
from billing_recon.domain.email import InboundEmail as ParsedEmail
from billing_recon.domain.fsm import INTAKE_REASONS, State, check_transition
from billing_recon.errors import ConcurrentTransition
from billing_recon.store.models import InboundEmail, MailboxFolder, Ticket, TicketEvent
from billing_recon.store.tickets import Sessions, format_ticket_id, new_event
from billing_recon.store.types import utcnow

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Opened:
    """The ticket of an email, whether this call created it, and, when another sender's email
    holds its Message-ID, which one (the email then has a ticket of its own)."""

    ticket: Ticket
    created: bool
    collision: str | None = None


def find_for(sessions: Sessions, identity: EmailIdentity) -> Ticket | None:
    """The ticket of an email: the one under its id when it has the email's sender (or the
    bytes identify the email), else the one under its sender id (see ``EmailIdentity``)."""
    ids = [identity.email_id, *([identity.sender_id] if identity.sender_id else [])]
    with sessions() as session:
        found = {t.email_id: t for t in session.scalars(select(Ticket).where(
            Ticket.email_id.in_(ids)))}
    for email_id in ids:
        ticket = found.get(email_id)
        if ticket is not None and (identity.sender_id is None or ticket.sender == identity.sender):
            return ticket
    return None


def open_ticket(sessions: Sessions, email: ParsedEmail, source: str | None,
                stored_as: str | None = None) -> Opened:
    """One ticket per email (SPEC §5): create it in RECEIVED, or return the one it has.

    An email refused at intake (``email.rejection``) moves on to REJECTED in the same
    transaction. ``stored_as``: the id the inbox table keeps the email under.
    """
    for _ in range(3):  # a concurrent writer may take the email's id between read and write
        existing = find_for(sessions, email.identity)
        if existing is not None:
            return Opened(existing, created=False)
        try:
            opened = _create(sessions, email, source, stored_as)
        except IntegrityError:
            continue  # the same email (found next time round), or another sender's
        _log_doubts(opened.ticket, email, source, opened.collision)
        return opened
    raise ConcurrentTransition(f"could not open a ticket for email {email.email_id}")


def _create(sessions: Sessions, email: ParsedEmail, source: str | None,
            stored_as: str | None) -> Opened:
    with sessions() as session, session.begin():
        email_id, collision, stored = _slot(session, email)
        if stored_as is not None and stored_as != email_id:  # kept under an id of older rules
            email_id, collision, stored = stored_as, None, True
        if not stored:
            session.add(InboundEmail(email_id=email_id, source=source, raw=email.raw))
        ticket = Ticket(email_id=email_id, state=State.RECEIVED.value, version=1,
                        sender=email.sender, subject=email.subject)
        session.add(ticket)
        session.flush()
        payload: dict[str, Any] = {"email_id": email_id, "source": source}
        if collision:
            payload["message_id_collision"] = collision
        if email.sender_flags:
            payload |= {"sender_flags": list(email.sender_flags),
                        "display_name": email.display_name}
        session.add(new_event(ticket.id, 1, "transition", None, State.RECEIVED, None,
                              "open_ticket", payload))
        if email.rejection is not None:
            _refuse(session, ticket, email.rejection, source)
    return Opened(ticket, created=True, collision=collision)


def _refuse(session: Session, ticket: Ticket, rejection: Rejection, source: str | None) -> None:
    """RECEIVED -> REJECTED(intake reason), recording the file and the problem."""
    check_transition(State.RECEIVED, State.REJECTED, rejection.reason)
    ticket.state, ticket.reason, ticket.version = (State.REJECTED.value,
                                                   rejection.reason.value, 2)
    session.add(new_event(ticket.id, 2, "transition", State.RECEIVED, State.REJECTED,
                          rejection.reason, "open_ticket",
                          {"file": source, "problem": rejection.problem}))


def source_of(sessions: Sessions, ticket: Ticket) -> str:
    """Where the ticket's email came from (a file, an IMAP URL), as recorded when it opened."""
    with sessions() as session:
        event = session.scalar(select(TicketEvent).where(
            TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.seq).limit(1))
    source = event.payload.get("source") if event else None
    return str(source) if source else format_ticket_id(ticket.id)


def refusal(sessions: Sessions, ticket: Ticket) -> str | None:
    """The recorded problem of an email refused at intake, else None."""
    if ticket.state != State.REJECTED.value or ticket.reason not in INTAKE_REASONS:
        return None
    with sessions() as session:
        event = session.scalar(select(TicketEvent).where(
            TicketEvent.ticket_id == ticket.id, TicketEvent.to_state == State.REJECTED.value))
    return str(event.payload.get("problem")) if event else None


def _slot(session: Session, email: ParsedEmail) -> tuple[str, str | None, bool]:
    """Where the email is stored: its id, else (another sender's email holds its Message-ID:
    the collision, described) its sender id; and whether it is stored there already."""
    row = session.get(InboundEmail, email.email_id)
    if row is None:
        return email.email_id, None, False
    holder = session.scalar(select(Ticket).where(Ticket.email_id == row.email_id))
    sender = holder.sender if holder else parse_email(row.raw).sender
    if email.identity.sender_id is None or sender == email.sender:
        return email.email_id, None, True
    held_by = f"{format_ticket_id(holder.id)} from {sender}" if holder else f"an email " \
        f"from {sender} stored for a batch"
    stored = session.get(InboundEmail, email.identity.sender_id) is not None
    return email.identity.sender_id, held_by, stored


def _log_doubts(ticket: Ticket, email: ParsedEmail, source: str | None,
                collision: str | None) -> None:
    """Warn of what an operator should know about a new ticket's sender."""
    name = format_ticket_id(ticket.id)
    if collision:
        _log.warning("%s (%s) from %s reuses the Message-ID <%s> of %s: it gets a ticket of "
                     "its own", name, source, email.sender, email.message_id, collision)
    if email.sender_flags:
        _log.warning("%s (%s): the display name %r of sender %s looks like another address",
                     name, source, email.display_name, email.sender)


def receive(sessions: Sessions, email: ParsedEmail, source: str | None) -> bool:
    """Store an inbound email for a later batch (the inbox table); False when already known."""
    try:
        with sessions() as session, session.begin():
            email_id, _, stored = _slot(session, email)
            if stored:
                return False
            session.add(InboundEmail(email_id=email_id, source=source, raw=email.raw))
        return True
    except IntegrityError:
        return False  # stored by a concurrent receiver


def unticketed(sessions: Sessions) -> list[InboundEmail]:
    """Stored emails that have no ticket yet, in arrival order."""
    with sessions() as session:
        query = (select(InboundEmail).outerjoin(Ticket, Ticket.email_id == InboundEmail.email_id)
                 .where(Ticket.id.is_(None))
                 .order_by(InboundEmail.received_at, InboundEmail.email_id))
        return list(session.scalars(query))


def see_uidvalidity(sessions: Sessions, folder: str, uidvalidity: int) -> int | None:
    """Record a mailbox folder's UIDVALIDITY; the one recorded before when it differs."""
    with sessions() as session, session.begin():
        row = session.get(MailboxFolder, folder, with_for_update=True)
        if row is None:
            session.add(MailboxFolder(folder=folder, uidvalidity=uidvalidity))
            return None
        before = row.uidvalidity
        row.uidvalidity, row.seen_at = uidvalidity, utcnow()
    return before if before != uidvalidity else None
