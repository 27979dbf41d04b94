"""Replies to customers and notices to approvers: queued once, sent once (issue 17).

``queue_due`` derives what is owed from committed ticket states, so a crash anywhere before it
loses nothing (the next pass queues it) and the outbox's unique key makes a second pass queue
nothing twice:

- a **reply** (key ``reply:{ticket_key}``) for a ticket CLOSED(refunded) (only reached once
  every refund succeeded), CLOSED(no_discrepancy) or REJECTED_BY_APPROVER, with the summary
  agent's drafted reply, to the From address of a known customer's email (a ticket without a
  customer never gets one), threaded under that email;
- a **notice** (key ``notice:{event id}``) to the approvers when a ticket starts waiting for a
  decision or is escalated: amount, customer, and the paused run's link in the Prefect UI.

``deliver`` sends what is queued through the claim of ``store.outbox``.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

from sqlalchemy import and_, exists, select

from billing_recon.domain.email import parse_email
from billing_recon.domain.fsm import Reason, State
from billing_recon.domain.proposal import Proposal
from billing_recon.errors import MailRefused, MailUnavailable
from billing_recon.mail import compose
from billing_recon.mail.smtp import UNKNOWN_AFTER_DATA, SmtpSession
from billing_recon.steps.deps import Deps
from billing_recon.steps.intake import raw_email
from billing_recon.store import approvers, outbox, tickets
from billing_recon.store.models import OutboxMessage, Ticket, TicketEvent
from billing_recon.store.types import utcnow

log = logging.getLogger(__name__)
ACTOR = "outbox"
#: (state, reason) of the tickets whose customer gets the drafted reply.
REPLIED = {(State.CLOSED.value, Reason.REFUNDED.value),
           (State.CLOSED.value, Reason.NO_DISCREPANCY.value),
           (State.REJECTED_BY_APPROVER.value, Reason.REJECTED_BY_APPROVER.value)}
NOTICED = (State.APPROVAL_PENDING.value, State.ESCALATED.value)


@dataclass
class Delivery:
    """What one ``deliver`` pass did, by outbox key."""

    sent: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    error: str | None = None


def queue_due(deps: Deps, ui_url: str | None = None) -> list[str]:
    """Queue every reply and notice owed and not queued yet; their keys."""
    if not deps.settings.smtp.host:
        return []
    queued = [key for ticket in _awaiting_reply(deps) if (key := _queue_reply(deps, ticket))]
    for ticket in _noticeable(deps):
        key = _queue_notice(deps, ticket, ui_url)
        if key:
            queued.append(key)
    return queued


def _cutoff(deps: Deps) -> object:
    return utcnow() - timedelta(hours=deps.settings.smtp.max_age_h)


def _awaiting_reply(deps: Deps) -> list[Ticket]:
    replied = exists().where(and_(OutboxMessage.ticket_id == Ticket.id,
                                  OutboxMessage.kind == "reply"))
    with deps.sessions() as session:
        found = session.scalars(select(Ticket).where(
            Ticket.state.in_([s for s, _ in REPLIED]), Ticket.reply.is_not(None),
            Ticket.ticket_key.is_not(None), Ticket.customer_id.is_not(None),
            Ticket.sender != "", Ticket.updated_at >= _cutoff(deps), ~replied)
            .order_by(Ticket.id))
        return [t for t in found if (t.state, t.reason) in REPLIED]


def _queue_reply(deps: Deps, ticket: Ticket) -> str | None:
    raw = raw_email(deps, ticket)
    original = parse_email(raw)
    try:
        refs = str(message_from_bytes(raw, policy=policy.default).get("References", ""))
    except Exception:  # a header the email package cannot read: thread on In-Reply-To alone
        refs = ""
    key, sender = f"reply:{ticket.ticket_key}", deps.settings.smtp.from_address
    msg = compose.reply(key=key, sender=sender, to=ticket.sender, subject=ticket.subject,
                        body=ticket.reply or "", original_id=original.message_id,
                        original_references=refs)
    return key if _queue(deps, ticket, key, "reply", [ticket.sender], msg) else None


def _noticeable(deps: Deps) -> list[Ticket]:
    with deps.sessions() as session:
        return list(session.scalars(select(Ticket).where(
            Ticket.state.in_(NOTICED), Ticket.updated_at >= _cutoff(deps))
            .order_by(Ticket.id)))


def _entered(deps: Deps, ticket: Ticket) -> TicketEvent | None:
    """The transition that put the ticket in its current state."""
    with deps.sessions() as session:
        return session.scalar(select(TicketEvent).where(
            TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "transition",
            TicketEvent.to_state == ticket.state).order_by(TicketEvent.seq.desc()).limit(1))


def notify_to(deps: Deps) -> list[str]:
    """Who is told: the configured addresses, else every enabled enrolled approver."""
    given = list(deps.settings.smtp.notify)
    return given or sorted({a.email for a in approvers.all_approvers(deps.sessions)
                            if a.enabled and a.email})


def _queue_notice(deps: Deps, ticket: Ticket, ui_url: str | None) -> str | None:
    event = _entered(deps, ticket)
    if event is None or outbox.has_key(deps.sessions, f"notice:{event.id}"):
        return None
    recipients = notify_to(deps)
    if not recipients:
        log.warning("%s: nobody to tell (no BILLING_RECON_SMTP_NOTIFY and no enrolled "
                    "approver)", tickets.format_ticket_id(ticket.id))
        return None
    key = f"notice:{event.id}"
    subject, body = _notice_text(ticket, event, ui_url)
    msg = compose.notice(key=key, sender=deps.settings.smtp.from_address, to=recipients,
                         subject=subject, body=body)
    kind = "approval_needed" if ticket.state == State.APPROVAL_PENDING.value else "escalated"
    return key if _queue(deps, ticket, key, kind, recipients, msg) else None


def _amount(ticket: Ticket) -> str:
    if not ticket.proposal:
        return "no proposal"
    proposal = Proposal.model_validate(ticket.proposal)
    return ", ".join(f"{r.amount} {r.currency}" for r in proposal.refunds) or "nothing"


def run_link(ticket: Ticket, ui_url: str | None) -> str:
    """The ticket's flow run in the Prefect UI, when both are known."""
    if ui_url and ticket.flow_run_id:
        return f"{ui_url.rstrip('/')}/runs/flow-run/{ticket.flow_run_id}"
    return "(no link: the run or PREFECT_UI_URL is unknown)"


def _notice_text(ticket: Ticket, event: TicketEvent, ui_url: str | None) -> tuple[str, str]:
    name = tickets.format_ticket_id(ticket.id)
    customer = f"{ticket.customer_id or 'unknown customer'} <{ticket.sender}>"
    lines = [f"Ticket: {name}", f"Customer: {customer}", f"Subject: {ticket.subject}",
             f"Refund proposed: {_amount(ticket)}", f"Run: {run_link(ticket, ui_url)}"]
    if ticket.state == State.APPROVAL_PENDING.value:
        subject = f"[billing-recon] {name} waits for a decision: {_amount(ticket)}, {customer}"
        lines.append(f"Decide in the Prefect UI (Resume) or: billing-recon approve {name} "
                     "--by NAME --code CODE")
    else:
        subject = f"[billing-recon] {name} escalated ({ticket.reason}): {customer}"
        lines.append(f"Why: {event.reason}; details: billing-recon tickets show {name}")
    return subject, "\n".join(lines) + "\n"


def _queue(deps: Deps, ticket: Ticket, key: str, kind: str, to: list[str],
           msg: EmailMessage) -> bool:
    row = OutboxMessage(key=key, kind=kind, ticket_id=ticket.id, message_id=msg["Message-ID"],
                        recipients=to, message=msg.as_bytes(), status=outbox.QUEUED,
                        attempts=0)
    if not outbox.queue(deps.sessions, row):
        return False
    tickets.note(deps.sessions, ticket.id, "mail_queued", ACTOR,
                 {"key": key, "kind": kind, "message_id": row.message_id, "to": to})
    return True


def deliver(deps: Deps) -> Delivery:
    """Send every queued message once; see the module and docs/exactly-once.md."""
    done = Delivery()
    if not deps.settings.smtp.host:
        return done
    _give_up_on_stale(deps, done)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    session: SmtpSession | None = None
    try:
        while (row := outbox.claim(deps.sessions, holder, deps.settings.smtp.lease_s)):
            deps.switches.crash_point("outbox.before_send")
            try:
                session = session or SmtpSession(deps.settings.smtp).__enter__()
            except MailUnavailable as exc:
                _defer(deps, row, holder, outbox.CLAIMED, exc, done)
                break
            if not _send(deps, session, row, holder, done):
                break
    finally:
        if session is not None:
            session.close()
    return done


def _give_up_on_stale(deps: Deps, done: Delivery) -> None:
    """A sender died between committing ``sending`` and committing ``sent``: the server may
    have the message. It is never sent again by itself (uncertain); an operator decides."""
    for row in outbox.stale_sending(deps.sessions):
        problem = ("the sender died around the SMTP DATA command: the server may have "
                   "accepted it; `billing-recon mail resend` sends it again")
        if outbox.move(deps.sessions, row.id, row.holder or "", outbox.SENDING,
                       outbox.UNCERTAIN, error=problem):
            log.warning("%s (%s): %s", row.key, row.message_id, problem)
            tickets.note(deps.sessions, row.ticket_id, "mail_uncertain", ACTOR,
                         {"key": row.key, "message_id": row.message_id, "problem": problem})
            done.uncertain.append(row.key)


def _send(deps: Deps, session: SmtpSession, row: OutboxMessage, holder: str,
          done: Delivery) -> bool:
    """Send one claimed row; False: stop this pass (the server is in trouble)."""
    stop = _envelope(deps, session, row, holder, done)
    return stop if stop is not None else _data(deps, session, row, holder, done)


def _envelope(deps: Deps, session: SmtpSession, row: OutboxMessage, holder: str,
              done: Delivery) -> bool | None:
    """MAIL FROM and RCPT TO, then ``sending`` committed; None: go on with DATA."""
    smtp = deps.settings.smtp
    try:
        session.envelope(smtp.from_address, list(row.recipients))
    except MailRefused as exc:
        _fail(deps, row, holder, outbox.CLAIMED, exc, done)
        session.reset()
        return True
    except MailUnavailable as exc:
        _defer(deps, row, holder, outbox.CLAIMED, exc, done)
        return False
    lease = utcnow() + timedelta(seconds=smtp.lease_s)
    if not outbox.move(deps.sessions, row.id, holder, outbox.CLAIMED, outbox.SENDING,
                       lease_until=lease):
        session.reset()  # our claim was taken over: the other sender sends it
        return True
    return None


def _data(deps: Deps, session: SmtpSession, row: OutboxMessage, holder: str,
          done: Delivery) -> bool:
    """DATA, then ``sent`` committed (see docs/exactly-once.md for the window between)."""
    try:
        session.data(row.message)
    except MailRefused as exc:
        _fail(deps, row, holder, outbox.SENDING, exc, done)
        return True
    except MailUnavailable as exc:  # a 4xx answer to DATA: not accepted
        _defer(deps, row, holder, outbox.SENDING, exc, done)
        return False
    except UNKNOWN_AFTER_DATA as exc:
        outbox.move(deps.sessions, row.id, holder, outbox.SENDING, outbox.UNCERTAIN,
                    error=f"connection lost during DATA: {exc}")
        done.uncertain.append(row.key)
        done.error = str(exc)
        return False
    deps.switches.crash_point("outbox.after_send")
    for source in (outbox.SENDING, outbox.UNCERTAIN):  # marked uncertain while we sent
        if outbox.move(deps.sessions, row.id, holder, source, outbox.SENT, sent_at=utcnow(),
                       error=None):
            break
    tickets.note(deps.sessions, row.ticket_id, "mail_sent", ACTOR,
                 {"key": row.key, "kind": row.kind, "message_id": row.message_id})
    done.sent.append(row.key)
    return True


def _defer(deps: Deps, row: OutboxMessage, holder: str, source: str, exc: Exception,
           done: Delivery) -> None:
    """Not delivered, for now: queued again for the next pass."""
    outbox.move(deps.sessions, row.id, holder, source, outbox.QUEUED, error=str(exc))
    done.deferred.append(row.key)
    done.error = str(exc)


def _fail(deps: Deps, row: OutboxMessage, holder: str, source: str, exc: MailRefused,
          done: Delivery) -> None:
    outbox.move(deps.sessions, row.id, holder, source, outbox.FAILED, error=str(exc))
    tickets.note(deps.sessions, row.ticket_id, "mail_failed", ACTOR,
                 {"key": row.key, "message_id": row.message_id, "error": str(exc)})
    log.warning("%s refused by the SMTP server: %s", row.key, exc)
    done.failed.append(row.key)
