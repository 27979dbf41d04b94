"""Prefect events about tickets, so automations can react to them (e.g. escalations)."""

from __future__ import annotations

from uuid import NAMESPACE_URL, uuid5

from prefect.events import emit_event

from billing_recon.store import tickets
from billing_recon.store.models import Ticket

ESCALATED = "billing-recon.ticket.escalated"


def ticket_resource(ticket: Ticket) -> dict[str, str]:
    """The ticket as a Prefect event resource (matchable as ``billing-recon.ticket.*``)."""
    name = tickets.format_ticket_id(ticket.id)
    return {"prefect.resource.id": f"billing-recon.ticket.{name}",
            "prefect.resource.name": name,
            "billing-recon.state": ticket.state,
            "billing-recon.reason": ticket.reason or ""}


def emit_escalated(ticket: Ticket) -> None:
    """Announce an escalated ticket once: the event id is fixed per ticket, so a re-run
    that emits again is the same event, not a second alert."""
    emit_event(event=ESCALATED, resource=ticket_resource(ticket),
               id=uuid5(NAMESPACE_URL, f"billing-recon:escalated:{ticket.email_id}"),
               payload={"ticket_id": tickets.format_ticket_id(ticket.id),
                        "ticket_key": ticket.ticket_key, "reason": ticket.reason})
