"""What the approver sees: the proposal as markdown and as table rows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing_recon.domain.money import fmt
from billing_recon.domain.proposal import Proposal
from billing_recon.steps.approval_gate import Progress
from billing_recon.store.models import Ticket
from billing_recon.store.tickets import format_ticket_id


def claimed_mismatch(proposal: Proposal) -> bool:
    """Whether the customer claimed amounts and none equals the computed total."""
    total = proposal.total()
    return bool(proposal.claimed) and all(Decimal(c) != total for c in proposal.claimed)


def approvals_line(progress: Progress) -> str:
    """``approvals: 1 of 2 (alice)`` when two different approvers are needed, else empty."""
    if not progress.four_eyes:
        return ""
    who = f" ({', '.join(progress.approved_by)})" if progress.approved_by else ""
    more = ("; a second, different approver must approve too"
            if 0 < len(progress.approved_by) < progress.required else "")
    return f"approvals: {len(progress.approved_by)} of {progress.required}{who}{more}"


def _how_to_decide(cli: str, progress: Progress | None) -> list[str]:
    lines = [f"**Four-eyes** {approvals_line(progress)}", ""] if (
        progress and progress.four_eyes) else []
    if progress and progress.codes:
        return [*lines, "Approve here (switch on, your name, the one-time code of your "
                f"authenticator app) or from a terminal: `{cli} --code CODE`"]
    return [*lines, f"Approve here (switch on, your name) or from a terminal: `{cli}`"]


def proposal_markdown(ticket: Ticket, cli: str, progress: Progress | None = None) -> str:
    """Markdown summary shown above the approval form in the Prefect UI.

    ``progress`` (approval_gate.progress) adds the four-eyes count and the code field's hint.
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
