"""The approval gate: decisions bound to the exact proposal, and the approval token."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing_recon.domain.approval import mint_token
from billing_recon.domain.fsm import Reason, State
from billing_recon.errors import ApprovalRefused
from billing_recon.steps.deps import Deps
from billing_recon.steps.reply import reply_for
from billing_recon.store import tickets
from billing_recon.store.models import ApprovalDecision, Ticket
from billing_recon.store.types import utcnow


@dataclass(frozen=True)
class Decision:
    """What an approver submitted, from the CLI or the Prefect UI form."""

    approve: bool
    approver: str
    proposal_hash: str
    channel: str
    note: str = ""


def check_decision(deps: Deps, ticket: Ticket, decision: Decision) -> None:
    """Refuse a decision that cannot count, with a message the approver can act on."""
    name = tickets.format_ticket_id(ticket.id)
    if decision.approver.strip() not in deps.settings.approvers:
        allowed = ", ".join(deps.settings.approvers) or "nobody (BILLING_RECON_APPROVERS='')"
        raise ApprovalRefused(f"{decision.approver!r} is not an approver; approvers: {allowed}")
    if ticket.state != State.APPROVAL_PENDING.value:
        raise ApprovalRefused(f"{name} is {ticket.state}, not awaiting a decision")
    if decision.proposal_hash.strip() != ticket.proposal_hash:
        raise ApprovalRefused(f"{name}: the decision is for proposal {decision.proposal_hash[:12]}"
                              f", but the current proposal is {(ticket.proposal_hash or '')[:12]}")
    if ticket.approval_deadline is not None and utcnow() > ticket.approval_deadline:
        raise ApprovalRefused(f"{name}: the approval deadline has passed")


def _row(ticket_id: int, decision: Decision) -> ApprovalDecision:
    return ApprovalDecision(ticket_id=ticket_id,
                            decision="approve" if decision.approve else "reject",
                            approver=decision.approver.strip(), note=decision.note or None,
                            proposal_hash=decision.proposal_hash.strip(),
                            channel=decision.channel, code_verified=False)


def record_decision(deps: Deps, ticket_id: int, decision: Decision, actor: str) -> Ticket:
    """Check, then APPROVED (with a minted token) or REJECTED_BY_APPROVER, atomically."""
    ticket = tickets.get(deps.sessions, ticket_id)
    try:
        check_decision(deps, ticket, decision)
    except ApprovalRefused as exc:
        tickets.note(deps.sessions, ticket_id, "approval_refused", actor,
                     {**asdict(decision), "error": str(exc)})
        raise

    def add_row(session: Session, _ticket: Ticket) -> None:
        session.add(_row(ticket_id, decision))

    payload = {**asdict(decision), "decided_at": utcnow().isoformat()}
    if not decision.approve:
        reply = reply_for(deps, ticket, "rejected_by_approver")
        return tickets.transition(deps.sessions, ticket_id, State.REJECTED_BY_APPROVER,
                                  reason=Reason.REJECTED_BY_APPROVER, actor=actor,
                                  payload=payload, fields={"reply": reply}, within=add_row,
                                  expect=State.APPROVAL_PENDING)
    token = mint_token(deps.settings.signing_key(), ticket.ticket_key or "",
                       decision.proposal_hash.strip(), [decision.approver.strip()])
    return tickets.transition(deps.sessions, ticket_id, State.APPROVED, actor=actor,
                              payload=payload, fields={"approval_token": token}, within=add_row,
                              expect=State.APPROVAL_PENDING)


def approvers_of(deps: Deps, ticket_id: int, proposal_hash: str) -> list[str]:
    """Who approved this exact proposal."""
    with deps.sessions() as session:
        rows = session.scalars(select(ApprovalDecision.approver).where(
            ApprovalDecision.ticket_id == ticket_id, ApprovalDecision.decision == "approve",
            ApprovalDecision.proposal_hash == proposal_hash))
        return sorted(set(rows))


def decisions(deps: Deps, ticket_id: int) -> list[ApprovalDecision]:
    """Every recorded decision of a ticket, oldest first."""
    with deps.sessions() as session:
        return list(session.scalars(select(ApprovalDecision).where(
            ApprovalDecision.ticket_id == ticket_id).order_by(ApprovalDecision.id)))


def expire_if_due(deps: Deps, ticket_id: int, actor: str) -> bool:
    """APPROVAL_PENDING past its deadline -> ESCALATED(approval_timeout)."""
    ticket = tickets.get(deps.sessions, ticket_id)
    due = ticket.approval_deadline is not None and utcnow() > ticket.approval_deadline
    if ticket.state != State.APPROVAL_PENDING.value or not due:
        return False
    tickets.transition(deps.sessions, ticket_id, State.ESCALATED, reason=Reason.APPROVAL_TIMEOUT,
                       actor=actor, payload={"deadline": ticket.approval_deadline.isoformat()
                                             if ticket.approval_deadline else None},
                       expect=State.APPROVAL_PENDING)
    return True
