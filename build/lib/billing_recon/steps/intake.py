"""open_ticket and triage: an email becomes exactly one ticket, then is triaged."""

from __future__ import annotations

from pathlib import Path

from billing_recon.agents.triage import triage
from billing_recon.domain.email import parse_email
from billing_recon.domain.fsm import Reason, State
from billing_recon.errors import ModelOutputInvalid, UserInputError
from billing_recon.steps.budget import metered
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.models import Ticket


def read_email(path: str) -> bytes:
    """The raw bytes of an .eml file, with a clear error when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserInputError(f"cannot read email {path}: {exc.strerror}") from exc


def open_ticket(deps: Deps, raw: bytes, source: str | None) -> tickets.Opened:
    """The ticket of this email: a new one in RECEIVED, or the one it already has."""
    return tickets.open_ticket(deps.sessions, parse_email(raw), source)


def receive_email(deps: Deps, raw: bytes, source: str | None) -> bool:
    """Put an email in the inbox table for the next batch; False when it was already there."""
    return tickets.receive(deps.sessions, parse_email(raw), source)


def open_from_table(deps: Deps) -> list[int]:
    """Open a ticket for every stored email that has none, in arrival order."""
    opened = []
    for row in tickets.unticketed(deps.sessions):
        email = parse_email(row.raw.encode("utf-8", "surrogateescape"))
        opened.append(tickets.open_ticket(deps.sessions, email, row.source).ticket.id)
    return opened


def raw_email(deps: Deps, ticket: Ticket) -> bytes:
    """The email exactly as received."""
    from billing_recon.store.models import InboundEmail

    with deps.sessions() as session:
        row = session.get(InboundEmail, ticket.email_id)
    assert row is not None, "a ticket always has its email"
    return row.raw.encode("utf-8", "surrogateescape")


def run_triage(deps: Deps, ticket_id: int, actor: str) -> Ticket:
    """RECEIVED -> TRIAGED, then CLOSED(not_billing) when the email is not about billing.

    An unusable model answer escalates (internal_error): nothing downstream may guess the scope.
    Budget and breaker refusals propagate for the orchestrator to act on.
    """
    ticket = tickets.get(deps.sessions, ticket_id)
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
