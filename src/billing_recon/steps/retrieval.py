"""fetch_invoices: sender -> customer, referenced ids -> scope, scope -> ticket key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from billing_recon.domain.fsm import Reason, State
from billing_recon.domain.ticket_key import ticket_key
from billing_recon.steps.deps import Deps
from billing_recon.store import billing, tickets
from billing_recon.store.models import Ticket


@dataclass(frozen=True)
class Scope:
    """The invoices a ticket may touch, and the ids it dropped (recorded, never used)."""

    customer_id: str
    invoice_ids: list[str]
    not_owned: list[str]
    not_found: list[str]
    referenced: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the ticket row and the event log."""
        return {"customer_id": self.customer_id, "invoice_ids": self.invoice_ids,
                "not_owned": self.not_owned, "not_found": self.not_found,
                "referenced": self.referenced}


def resolve_scope(session: Session, customer_id: str, referenced: list[str]) -> Scope:
    """SPEC §5: keep owned ids; with no id referenced, every invoice of the customer."""
    if not referenced:
        return Scope(customer_id, billing.customer_invoice_ids(session, customer_id), [], [],
                     referenced=False)
    owners = billing.invoice_owners(session, referenced)
    return Scope(
        customer_id=customer_id,
        invoice_ids=sorted(i for i in referenced if owners.get(i) == customer_id),
        not_owned=sorted(i for i in referenced if i in owners and owners[i] != customer_id),
        not_found=sorted(i for i in referenced if i not in owners),
        referenced=True,
    )


def _reject(deps: Deps, ticket_id: int, reason: Reason, actor: str, payload: dict[str, Any]
            ) -> Ticket:
    return tickets.transition(deps.sessions, ticket_id, State.REJECTED, reason=reason,
                              actor=actor, payload=payload, expect=State.TRIAGED)


def fetch_invoices(deps: Deps, ticket_id: int, actor: str,
                   known: Ticket | None = None) -> Ticket:
    """TRIAGED -> DATA_FETCHED, REJECTED(...) or DUPLICATE (race-safe on the ticket key).

    ``known``: the ticket as the caller last committed it (``tickets.current``).
    """
    ticket = tickets.current(deps.sessions, ticket_id, known)
    referenced = list((ticket.triage or {}).get("invoice_ids", []))
    with deps.sessions() as session:
        customer = billing.customer_by_email(session, ticket.sender)
        if customer is None:
            return _reject(deps, ticket_id, Reason.UNKNOWN_SENDER, actor,
                           {"sender": ticket.sender})
        scope = resolve_scope(session, customer.customer_id, referenced)
    if scope.referenced and not scope.invoice_ids:
        reason = Reason.INVOICE_NOT_OWNED if scope.not_owned else Reason.INVOICE_NOT_FOUND
        return _reject(deps, ticket_id, reason, actor, scope.as_dict())
    key = ticket_key(ticket.sender, scope.invoice_ids)
    return _claim(deps, ticket_id, key, scope, actor)


class _KeyTaken(Exception):
    """The ticket key is another ticket's: the move to DATA_FETCHED is abandoned."""

    def __init__(self, owner: int) -> None:
        super().__init__(owner)
        self.owner = owner


def _claim(deps: Deps, ticket_id: int, key: str, scope: Scope, actor: str) -> Ticket:
    """Claim the key in the transaction that moves the ticket to DATA_FETCHED (a crash before
    its commit leaves neither, and the re-run claims again); a key another ticket claimed
    first makes this one its DUPLICATE instead."""
    fields = {"ticket_key": key, "scope": scope.as_dict(), "customer_id": scope.customer_id}

    def claim(session: Session, _ticket: Ticket) -> None:
        owner = tickets.claim_key(session, key, ticket_id)
        if owner != ticket_id:
            raise _KeyTaken(owner)

    try:
        return tickets.transition(deps.sessions, ticket_id, State.DATA_FETCHED, actor=actor,
                                  payload={"ticket_key": key, **scope.as_dict()},
                                  fields=fields, within=claim, expect=State.TRIAGED)
    except _KeyTaken as taken:
        owner = taken.owner
    return tickets.transition(
        deps.sessions, ticket_id, State.DUPLICATE, reason=Reason.DUPLICATE, actor=actor,
        payload={"ticket_key": key, "duplicate_of": tickets.format_ticket_id(owner)},
        fields={**fields, "duplicate_of": owner}, expect=State.TRIAGED)
