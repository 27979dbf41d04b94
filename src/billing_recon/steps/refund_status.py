"""A refund's truth after the gateway's first answer, and what it does to its ticket.

Stripe reports a refund ``pending`` and settles it later, or fails one that had succeeded, and
says so only in webhook events. Whoever learns a status (the refund worker, the webhook
receiver, the sweep) applies it here, with the same effects:

- ``apply`` writes the status to the refund's ledger row and a ``refund_status`` event to its
  ticket's log, in one transaction; only a later status replaces an earlier one
  (domain/refund_status.py), so a stale or repeated event changes nothing;
- ``settle`` moves the ticket: CLOSED(refunded), with the customer's reply drafted, only once
  every refund of the ticket succeeded; ESCALATED(refund_failed), naming the payment and the
  failure reason, as soon as one failed or was canceled, from REFUNDED or from CLOSED.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing_recon.domain.fsm import Reason, State
from billing_recon.domain.money import fmt
from billing_recon.domain.refund_status import UNDONE, WAITING, RefundStatus, parse, replaces
from billing_recon.errors import ConcurrentTransition, UserInputError
from billing_recon.payments.refunds import GatewayRefund, RefundClient
from billing_recon.steps import reply
from billing_recon.steps.deps import Deps
from billing_recon.store import ledger, tickets
from billing_recon.store.models import Refund, Ticket
from billing_recon.store.types import utcnow

EVENT = "refund_status"
SETTLE_ATTEMPTS = 5


@dataclass(frozen=True)
class Applied:
    """What applying a status did: the refund's ticket, and whether its status changed."""

    ticket_id: int | None
    changed: bool


def apply(deps: Deps, refund: GatewayRefund, *, actor: str,
          event_id: str | None = None) -> Applied | None:
    """Record the gateway's status of ``refund`` in the ledger and its ticket's event log.

    None when the ledger has no such refund (not ours, or not recorded yet: the worker
    records it with the status it learns itself).
    """
    status = parse(refund.status)
    with deps.sessions() as session, session.begin():
        ticket_id = session.scalar(select(Refund.ticket_id).where(
            Refund.gateway_refund_id == refund.gateway_refund_id))
        # The ticket's row first, then the refund's: the order every writer of both takes.
        ticket = session.get(Ticket, ticket_id, with_for_update=True) if ticket_id else None
        row = ledger.by_gateway_id(session, refund.gateway_refund_id)
        if row is None:
            return None
        old = RefundStatus(row.status)
        if not replaces(status, old):
            return Applied(row.ticket_id, changed=False)
        row.status, row.status_at = status.value, utcnow()
        row.failure_reason = refund.failure_reason if status in UNDONE else None
        if ticket is not None:
            tickets.note_within(session, ticket, EVENT, actor, {
                "refund_id": row.refund_id, "payment_id": row.payment_id,
                "from": old.value, "to": status.value, "failure_reason": row.failure_reason,
                "event_id": event_id})
    return Applied(ticket_id, changed=True)


def settle(deps: Deps, ticket_id: int, actor: str) -> Ticket:
    """Close the ticket once all its refunds succeeded, escalate it once one failed; a ticket
    with a refund still waiting (or in any other state) is returned as it is."""
    for _ in range(SETTLE_ATTEMPTS):
        try:
            return _settle(deps, ticket_id, actor)
        except ConcurrentTransition:
            # Another settler (webhook, sweep, flow) moved it, or logged on it, meanwhile:
            # judge again on the fresh state.
            continue
    return tickets.get(deps.sessions, ticket_id)


def _settle(deps: Deps, ticket_id: int, actor: str) -> Ticket:
    ticket = tickets.get(deps.sessions, ticket_id)
    settled_by_refund = ticket.state == State.REFUNDED.value or (
        ticket.state == State.CLOSED.value and ticket.reason == Reason.REFUNDED.value)
    if not settled_by_refund:
        return ticket
    with deps.sessions() as session:
        rows = ledger.of_ticket(session, ticket_id)
    failed = [r for r in rows if r.status in UNDONE and r.failure_escalated_at is None]
    if failed:
        return _escalate(deps, ticket, failed, actor)
    open_rows = [r for r in rows if r.status not in UNDONE]
    if ticket.state == State.REFUNDED.value and open_rows and all(
            r.status == RefundStatus.SUCCEEDED for r in open_rows):
        return reply.close_refunded(deps, ticket_id, actor)
    return ticket


def _escalate(deps: Deps, ticket: Ticket, failed: list[Refund], actor: str) -> Ticket:
    ids = {r.refund_id for r in failed}
    shown = [_failure(r) for r in failed]

    def stamp(session: Session, _locked: Ticket) -> None:
        now = utcnow()
        for row in session.scalars(select(Refund).where(Refund.refund_id.in_(sorted(ids)))):
            row.failure_escalated_at = now

    first = shown[0]
    error = (f"refund {first['refund_id']} of payment {first['payment_id']} "
             f"({first['amount']} {first['currency']}) {first['status']}: "
             f"{first['failure_reason'] or 'no reason given'}")
    told = ticket.state == State.CLOSED.value  # the reply already said "refunded"
    return tickets.transition(deps.sessions, ticket.id, State.ESCALATED,
                              reason=Reason.REFUND_FAILED, actor=actor, within=stamp,
                              expect=State(ticket.state),
                              payload={"error": error, "failed": shown,
                                       "customer_told_refunded": told})


def _failure(row: Refund) -> dict[str, Any]:
    return {"refund_id": row.refund_id, "payment_id": row.payment_id,
            "amount": fmt(row.amount), "currency": row.currency, "status": row.status,
            "failure_reason": row.failure_reason}


def waiting_on_gateway(deps: Deps, ticket_id: int) -> bool:
    """Whether a refund of the ticket is still pending (or requires action) at the gateway."""
    with deps.sessions() as session:
        return any(r.status in WAITING for r in ledger.of_ticket(session, ticket_id))


def reopen_for_retry(deps: Deps, ticket_id: int, actor: str, note: str = "") -> Ticket:
    """An operator's retry of a ticket escalated for a failed refund: ESCALATED(refund_failed)
    -> RECEIVED(reopened). The ticket is analysed again (a failed refund no longer counts as
    refunded, so its money is owed again), proposed with ``retry`` in the proposal's hash, so
    only a fresh approval counts, and refunded under new idempotency keys
    (``{ticket_key}:{payment_id}:retryN``). A refund that did not fail is never asked again."""
    ticket = tickets.get(deps.sessions, ticket_id)
    if (ticket.state, ticket.reason) != (State.ESCALATED.value, Reason.REFUND_FAILED.value):
        raise UserInputError(f"{tickets.format_ticket_id(ticket_id)} is {ticket.state}"
                             f"({ticket.reason or ''}): only a ticket escalated for a failed "
                             "refund is retried")
    with deps.sessions() as session:
        failed = [_failure(r) for r in ledger.of_ticket(session, ticket_id)
                  if r.status in UNDONE]
    return tickets.transition(deps.sessions, ticket_id, State.RECEIVED, reason=Reason.REOPENED,
                              actor=actor, payload={"retry_of": failed, "note": note},
                              fields={"approval_token": None}, expect=State.ESCALATED)


def refresh(deps: Deps, client: RefundClient, ticket_id: int, actor: str) -> Ticket:
    """Re-read the ticket's waiting refunds from the gateway, apply them, settle the ticket."""
    with deps.sessions() as session:
        waiting = [r.gateway_refund_id for r in ledger.of_ticket(session, ticket_id)
                   if r.status in WAITING and r.gateway_refund_id]
    for refund_id in waiting:
        apply(deps, client.retrieve_refund(refund_id), actor=actor)
    return settle(deps, ticket_id, actor)


def settle_after_refund(deps: Deps, ticket_id: int, actor: str) -> Ticket:
    """The refund step's last part: refresh and settle with a client of its own."""
    client = deps.refund_client()
    try:
        return refresh(deps, client, ticket_id, actor)
    finally:
        client.close()
