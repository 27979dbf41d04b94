"""The non-agentic refund worker: verify the token, call the gateway, record the ledger.

No model is involved here. Three exactly-once layers meet in this module: the ledger row per
idempotency key is checked before any call, the gateway replays a key it has seen, and the
orchestrator caches the whole step on the ticket key.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from billing_recon.domain.approval import verify_token
from billing_recon.domain.fsm import State
from billing_recon.domain.proposal import Proposal
from billing_recon.domain.ticket_key import refund_idempotency_key
from billing_recon.errors import InvalidApprovalToken
from billing_recon.payments.refunds import RefundRequest
from billing_recon.steps.approval_gate import approvers_of
from billing_recon.steps.deps import Deps
from billing_recon.store import ledger, tickets
from billing_recon.store.models import Ticket
from billing_recon.store.types import utcnow


def authorised_proposal(deps: Deps, ticket: Ticket) -> Proposal:
    """The proposal exactly as approved, or InvalidApprovalToken."""
    proposal = Proposal.model_validate(ticket.proposal)
    digest = proposal.hash()
    name = tickets.format_ticket_id(ticket.id)
    if digest != ticket.proposal_hash:
        raise InvalidApprovalToken(f"{name}: the proposal changed after it was approved")
    approvers = approvers_of(deps, ticket.id, digest)
    if not verify_token(deps.settings.signing_key(), ticket.approval_token,
                        ticket.ticket_key or "", digest, approvers):
        raise InvalidApprovalToken(f"{name}: no valid approval token for this proposal")
    return proposal


def _recorded(deps: Deps, key: str) -> dict[str, Any] | None:
    with deps.sessions() as session:
        row = ledger.find(session, key)
    if row is None:
        return None
    return {"gateway_refund_id": row.gateway_refund_id or row.refund_id,
            "refunded_at": row.refunded_at.isoformat()}


def execute_refund(deps: Deps, ticket_id: int, actor: str) -> list[dict[str, Any]]:
    """One gateway call per (ticket, payment), each with its idempotency key."""
    ticket = tickets.get(deps.sessions, ticket_id)
    if ticket.state != State.APPROVED.value:
        raise InvalidApprovalToken(f"{tickets.format_ticket_id(ticket_id)} is {ticket.state}, "
                                   "not APPROVED")
    proposal = authorised_proposal(deps, ticket)
    tickets.note(deps.sessions, ticket_id, "refund_worker_started", actor,
                 {"proposal_hash": ticket.proposal_hash})
    out = []
    for refund in proposal.refunds:
        for pay in refund.payments:
            key = refund_idempotency_key(ticket.ticket_key or "", pay.payment_id)
            done = _recorded(deps, key) or _call(deps, ticket, pay.charge_ref or "", pay.amount,
                                                 refund.currency, key, pay.payment_id)
            out.append({"payment_id": pay.payment_id, "amount": str(pay.amount),
                        "currency": refund.currency, "idempotency_key": key, **done})
    return out


def _call(deps: Deps, ticket: Ticket, charge_ref: str, amount: Decimal, currency: str,
          key: str, payment_id: str) -> dict[str, Any]:
    request = RefundRequest(charge_ref=charge_ref, amount=amount, currency=currency,
                            idempotency_key=key,
                            metadata={"ticket": tickets.format_ticket_id(ticket.id),
                                      "ticket_key": ticket.ticket_key or "",
                                      "payment_id": payment_id})
    result = deps.refund_client().refund(request)
    tickets.note(deps.sessions, ticket.id, "gateway_refund", "refund_worker",
                 {"payment_id": payment_id, "idempotency_key": key,
                  "gateway_refund_id": result.gateway_refund_id, "amount": str(result.amount)})
    return {"gateway_refund_id": result.gateway_refund_id, "refunded_at": utcnow().isoformat()}


def record_refunds(deps: Deps, ticket_id: int, results: list[dict[str, Any]],
                   actor: str) -> Ticket:
    """Ledger rows and APPROVED -> REFUNDED in one transaction (idempotent per key)."""
    ticket = tickets.get(deps.sessions, ticket_id)
    if ticket.state != State.APPROVED.value:
        return ticket

    def write(session: Session, _ticket: Ticket) -> None:
        for r in results:
            ledger.record(session, idempotency_key=r["idempotency_key"],
                          payment_id=r["payment_id"], amount=Decimal(r["amount"]),
                          currency=r["currency"], ticket_id=ticket_id,
                          gateway_refund_id=r["gateway_refund_id"],
                          at=datetime.fromisoformat(r["refunded_at"]))

    return tickets.transition(deps.sessions, ticket_id, State.REFUNDED, actor=actor,
                              payload={"refunds": results}, within=write,
                              expect=State.APPROVED)
