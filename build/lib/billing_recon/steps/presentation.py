"""What the approver sees: the proposal as markdown and as table rows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing_recon.domain.money import fmt
from billing_recon.domain.proposal import Covered, Proposal
from billing_recon.steps.approval_gate import ApprovalCount
from billing_recon.store.models import Ticket
from billing_recon.store.tickets import format_ticket_id


def claimed_mismatch(proposal: Proposal) -> bool:
    """Whether the customer claimed amounts and none equals the computed total."""
    total = proposal.total()
    return bool(proposal.claimed) and all(Decimal(c) != total for c in proposal.claimed)


_COVERED = {"proposed": "proposed in {ticket}, pending", "approved": "approved in {ticket}, "
             "refund pending", "in_flight": "being refunded in {ticket}",
             "refunded": "refunded in {ticket}"}


def covered_line(covered: Covered) -> str:
    """``INV-000104: 0.33 proposed in T-000012, pending``: money another ticket holds."""
    where = _COVERED.get(covered.status, covered.status + " in {ticket}")
    return f"{covered.invoice_id}: {fmt(covered.amount)} {where.format(ticket=covered.ticket)}"


def covered_markdown(proposal: Proposal) -> list[str]:
    """The markdown lines telling the approver what other tickets already hold or refunded."""
    if not proposal.covered:
        return []
    return ["**Already proposed or refunded by other tickets** (not counted again here)", "",
            *[f"- {covered_line(c)}" for c in proposal.covered], ""]


def approvals_line(progress: ApprovalCount) -> str:
    """``approvals: 1 of 2 (alice)`` when two different approvers are needed, else empty."""
    if not progress.four_eyes:
        return ""
    who = f" ({', '.join(progress.approved_by)})" if progress.approved_by else ""
    more = ("; a second, different approver must approve too"
            if 0 < len(progress.approved_by) < progress.required else "")
    return f"approvals: {len(progress.approved_by)} of {progress.required}{who}{more}"


def _how_to_decide(cli: str, progress: ApprovalCount | None) -> list[str]:
    lines = [f"**Four-eyes** {approvals_line(progress)}", ""] if (
        progress and progress.four_eyes) else []
    if progress and progress.codes:
        return [*lines, "Approve here (switch on, your name, the one-time code of your "
                f"authenticator app) or from a terminal: `{cli} --code CODE`"]
    return [*lines, f"Approve here (switch on, your name) or from a terminal: `{cli}`"]


def proposal_markdown(ticket: Ticket, cli: str, progress: ApprovalCount | None = None) -> str:
    """Markdown summary shown above the approval form in the Prefect UI.

    ``progress`` (approval_gate.approval_count) adds the four-eyes count and the code field's hint.
    """
    proposal = Proposal.model_validate(ticket.proposal)
    name = format_ticket_id(ticket.id)
    lines = [f"## Refund approval for {name}", "",
             f"**Customer** {ticket.customer_id} ({ticket.sender})  ",
             f"**Subject** {ticket.subject}", ""]
    for refund in proposal.refunds:
        lines += [f"### {fmt(refund.amount)} {refund.currency}  ·  reasons: "
                  f"{', '.join(refund.reasons)}", "", "| invoice | refundable |", "|---|---:|"]
        lines += [f"| {inv} | {fmt(amount)} |" for inv, amount in sorted(refund.invoices.items())]
        lines += ["", "| payment | charge | refund |", "|---|---|---:|"]
        lines += [f"| {p.payment_id} | {p.charge_ref} | {fmt(p.amount)} |" for p in refund.payments]
        lines.append("")
    lines += covered_markdown(proposal)
    claimed = ", ".join(proposal.claimed) or "none"
    flag = "  **(differs from the computed amount)**" if claimed_mismatch(proposal) else ""
    lines += [f"**Claimed by the customer** {claimed}{flag}", "",
              f"**Proposal hash** `{ticket.proposal_hash}`", "",
              *_how_to_decide(cli, progress)]
    return "\n".join(lines)


def proposal_rows(ticket: Ticket) -> list[dict[str, Any]]:
    """One row per payment to refund, for a table artifact."""
    proposal = Proposal.model_validate(ticket.proposal)
    return [{"invoice": p.invoice_id, "payment": p.payment_id, "charge": p.charge_ref,
             "amount": fmt(p.amount), "currency": r.currency, "reasons": ", ".join(r.reasons)}
            for r in proposal.refunds for p in r.payments]
