"""Flow escalation-report: what an escalated ticket looks like, for whoever picks it up.

Run by the automation in deployments/prefect.yaml on every ``billing-recon.ticket.escalated``
event; it only reads the ticket and publishes it, it changes nothing.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.logging import get_run_logger

from billing_recon.domain.ticket_id import TicketId
from billing_recon.reports import event_row
from billing_recon.store import tickets
from billing_recon.store.models import Ticket
from billing_recon_tasks.runtime import deps, in_thread

LAST_EVENTS = 10


def _markdown(ticket: Ticket, events: list[dict[str, Any]]) -> str:
    """The ticket's state and reason above a table of its latest events."""
    name = tickets.format_ticket_id(ticket.id)
    lines = [f"# {name} escalated", "",
             f"- **State:** {ticket.state}", f"- **Reason:** {ticket.reason or '-'}",
             f"- **From:** {ticket.sender}", f"- **Subject:** {ticket.subject}", "",
             f"## Last {len(events)} events", "",
             "| seq | at | kind | from | to | reason | actor |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {e['seq']} | {e['at']} | {e['kind']} | {e['from'] or ''} | {e['to'] or ''} "
              f"| {e['reason'] or ''} | {e['actor']} |" for e in events]
    return "\n".join(lines) + "\n"


@flow(name="escalation-report", persist_result=False)
async def escalation_report(
    ticket_id: TicketId,
) -> dict[str, Any]:
    """Publish an escalated ticket's state, reason and last events as a markdown artifact.

    Args:
        ticket_id: The escalated ticket, e.g. T-000042 (the automation passes the event's
            resource name).
    """
    shown = tickets.format_ticket_id(ticket_id)
    ticket = await in_thread(tickets.get, deps().sessions, ticket_id)
    log = await in_thread(tickets.events, deps().sessions, ticket_id)
    events = [event_row(e) for e in log[-LAST_EVENTS:]]
    await acreate_markdown_artifact(_markdown(ticket, events),
                                    key=f"ticket-{ticket_id}-escalation",
                                    description=f"{shown}: escalated ({ticket.reason})")
    get_run_logger().warning("%s is %s (%s): see the escalation artifact",
                             shown, ticket.state, ticket.reason)
    return {"ticket_id": shown, "state": ticket.state, "reason": ticket.reason}
