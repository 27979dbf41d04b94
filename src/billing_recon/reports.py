"""Human and JSON renderings of tickets, approvals and refunds for the CLI."""

from __future__ import annotations

from typing import Any

from billing_recon.domain.money import fmt
from billing_recon.domain.proposal import Proposal
from billing_recon.store.models import (
    ApprovalDecision,
    Approver,
    ApproverAudit,
    Refund,
    Ticket,
    TicketEvent,
)
from billing_recon.store.tickets import format_ticket_id


def refund_summary(ticket: Ticket) -> dict[str, Any] | None:
    """SPEC §8's ``refund`` object (the first currency); None when nothing is proposed."""
    if not ticket.proposal:
        return None
    proposal = Proposal.model_validate(ticket.proposal)
    if not proposal.refunds:
        return None
    first = proposal.refunds[0]
    return {"amount": fmt(first.amount), "currency": first.currency,
            "invoices": {k: fmt(v) for k, v in sorted(first.invoices.items())},
            "reasons": first.reasons}


def ticket_line(path: str, ticket: Ticket) -> dict[str, Any]:
    """The ``process --json`` line of SPEC §8 (``refunds`` added for mixed currencies)."""
    line = {"email": path, "ticket_id": format_ticket_id(ticket.id),
            "ticket_key": ticket.ticket_key, "state": ticket.state, "reason": ticket.reason,
            "refund": refund_summary(ticket)}
    if ticket.proposal and len(ticket.proposal.get("refunds", [])) > 1:
        line["refunds"] = ticket.proposal["refunds"]
    return line


def refund_row(row: Refund) -> dict[str, Any]:
    """One ledger row as in ``refunds --json``."""
    return {"refund_id": row.refund_id, "payment_id": row.payment_id, "amount": fmt(row.amount),
            "currency": row.currency,
            "ticket_id": format_ticket_id(row.ticket_id) if row.ticket_id else None,
            "idempotency_key": row.idempotency_key,
            "refunded_at": row.refunded_at.isoformat(), "status": row.status,
            "failure_reason": row.failure_reason}


def event_row(event: TicketEvent) -> dict[str, Any]:
    """One event of the log."""
    return {"seq": event.seq, "at": event.at.isoformat(), "kind": event.kind,
            "from": event.from_state, "to": event.to_state, "reason": event.reason,
            "actor": event.actor, "payload": event.payload}


def decision_row(row: ApprovalDecision) -> dict[str, Any]:
    """One recorded decision for the audit trail: who, when, how, and whether a code proved it."""
    return {"decision": row.decision, "approver": row.approver, "note": row.note,
            "channel": row.channel, "code_verified": row.code_verified,
            "proposal_hash": row.proposal_hash, "at": row.decided_at.isoformat()}


def decision_text(row: dict[str, Any]) -> str:
    """``approve by alice via cli at ... (code verified)`` for ``tickets show``."""
    proof = "code verified" if row["code_verified"] else "no code"
    return f"{row['decision']} by {row['approver']} via {row['channel']} at {row['at']} ({proof})"


def approver_row(row: Approver) -> dict[str, Any]:
    """What may be shown of an approver: never the secret, sealed or not."""
    return {"name": row.name, "email": row.email, "role": row.role, "enabled": row.enabled,
            "locked_at": row.locked_at.isoformat() if row.locked_at else None,
            "created_at": row.created_at.isoformat()}


def audit_row(row: ApproverAudit) -> dict[str, Any]:
    """One change of the approver registry."""
    return {"approver": row.approver, "action": row.action, "actor": row.actor,
            "details": row.details, "at": row.at.isoformat()}


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with aligned columns."""
    widths = [max(len(str(x)) for x in [h, *(r[i] for r in rows)]) for i, h in enumerate(headers)]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt_row.format(*headers), fmt_row.format(*("-" * w for w in widths))]
    out += [fmt_row.format(*map(str, r)) for r in rows]
    return "\n".join(out)
