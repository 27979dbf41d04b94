"""open_ticket and triage: an email becomes exactly one ticket, then is triaged."""

from __future__ import annotations

import hashlib
import os

from billing_recon.agents.triage import triage
from billing_recon.domain.email import InboundEmail as ParsedEmail
from billing_recon.domain.email import oversized, parse_email
from billing_recon.domain.fsm import Reason, State
from billing_recon.errors import ModelOutputInvalid, UserInputError
from billing_recon.steps.budget import metered
from billing_recon.steps.deps import Deps
from billing_recon.store import inbox, tickets
from billing_recon.store.models import InboundEmail, Ticket


def email_of(raw: bytes, max_bytes: int) -> ParsedEmail:
    """The parsed email; one above ``max_bytes`` is refused unparsed (email_too_large)."""
    if len(raw) > max_bytes:
        return oversized(hashlib.sha256(raw).hexdigest(), len(raw), max_bytes)
    return parse_email(raw)


def load_email(path: str, max_bytes: int) -> ParsedEmail:
    """An .eml file, parsed; one above ``max_bytes`` is refused without being read into memory
    (its bytes are only streamed through SHA-256, its identity). A file that cannot be read at
    all is an error for the user to fix."""
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size <= max_bytes:
                raw = handle.read(max_bytes + 1)  # bounded: the file may grow meanwhile
                if len(raw) <= max_bytes:
                    return parse_email(raw)
                handle.seek(0)
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
            return oversized(digest, handle.tell(), max_bytes)
    except OSError as exc:
        raise UserInputError(f"cannot read email {path}: {exc.strerror}") from exc


def open_ticket(deps: Deps, raw: bytes, source: str | None) -> inbox.Opened:
    """The ticket of this email: a new one in RECEIVED (REJECTED when refused at intake), or
    the one it already has."""
    return inbox.open_ticket(deps.sessions, email_of(raw, _limit(deps)), source)


def open_file(deps: Deps, path: str) -> inbox.Opened:
    """``open_ticket`` for an .eml file, read within the size limit."""
    return inbox.open_ticket(deps.sessions, load_email(path, _limit(deps)), path)


def receive_email(deps: Deps, raw: bytes, source: str | None) -> bool:
    """Put an email in the inbox table for the next batch; False when it was already there.

    One above the size limit is not stored: its ticket is refused at once.
    """
    email = email_of(raw, _limit(deps))
    if email.rejection is not None and email.rejection.reason is Reason.EMAIL_TOO_LARGE:
        return inbox.open_ticket(deps.sessions, email, source).created
    return inbox.receive(deps.sessions, email, source)


def open_from_table(deps: Deps) -> list[int]:
    """Open a ticket for every stored email that has none, in arrival order."""
    return [inbox.open_ticket(deps.sessions, parse_email(row.raw), row.source,
                              stored_as=row.email_id).ticket.id
            for row in inbox.unticketed(deps.sessions)]


def _limit(deps: Deps) -> int:
    return deps.settings.intake.max_email_bytes


def raw_email(deps: Deps, ticket: Ticket) -> bytes:
    """The email exactly as received."""
    with deps.sessions() as session:
        row = session.get(InboundEmail, ticket.email_id)
    assert row is not None, "a ticket always has its email"
    return row.raw


def run_triage(deps: Deps, ticket_id: int, actor: str, known: Ticket | None = None) -> Ticket:
    """RECEIVED -> TRIAGED, then CLOSED(not_billing) when the email is not about billing.

    An unusable model answer escalates (internal_error): nothing downstream may guess the scope.
    Budget and breaker refusals propagate for the orchestrator to act on. ``known``: the
    ticket as the caller last committed it (``tickets.current``).
    """
    ticket = tickets.current(deps.sessions, ticket_id, known)
    model = metered(deps, ticket_id, actor)
    try:
        result = triage(model, parse_email(raw_email(deps, ticket)))
    except ModelOutputInvalid as exc:
        return tickets.transition(deps.sessions, ticket_id, State.ESCALATED,
                                  reason=Reason.INTERNAL_ERROR, actor=actor,
                                  payload={"agent": "triage", "error": str(exc)},
                                  expect=State.RECEIVED)
    usage = {"prompt_tokens": result.usage.prompt_tokens,
             "completion_tokens": result.usage.completion_tokens}
    payload = {"is_billing": result.is_billing, "invoice_ids": result.invoice_ids,
               "claimed_amounts": result.claimed_amounts, "dropped_ids": result.dropped,
               "model": model.name, "usage": usage}
    ticket = tickets.transition(deps.sessions, ticket_id, State.TRIAGED, actor=actor,
                                payload=payload, fields={"triage": payload},
                                expect=State.RECEIVED)
    if not result.is_billing:
        ticket = tickets.transition(deps.sessions, ticket_id, State.CLOSED,
                                    reason=Reason.NOT_BILLING, actor=actor,
                                    payload={"why": "triage found no billing intent"})
    return ticket
