"""The evidence behind a proposal, as table rows for the approver (Prefect table artifacts)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from billing_recon.domain.fsm import State
from billing_recon.domain.money import fmt
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.models import Invoice, Payment, Ticket


def invoice_rows(deps: Deps, ticket: Ticket) -> list[dict[str, Any]]:
    """The invoices in the ticket's scope as billed, with what was paid on each."""
    ids = list((ticket.scope or {}).get("invoice_ids", []))
    with deps.sessions() as session:
        invoices = session.scalars(select(Invoice).where(Invoice.invoice_id.in_(ids))
                                   .order_by(Invoice.invoice_id)).all()
        payments = session.scalars(select(Payment).where(Payment.invoice_id.in_(ids))).all()
    paid: dict[str, list[str]] = {}
    for pay in payments:
        paid.setdefault(pay.invoice_id, []).append(f"{pay.payment_id} {fmt(pay.amount)}")
    return [{"invoice": inv.invoice_id, "issued_at": inv.issued_at.date().isoformat(),
             "currency": inv.currency, "subtotal": fmt(inv.subtotal), "tax": fmt(inv.tax),
             "total": fmt(inv.total), "payments": ", ".join(sorted(paid.get(inv.invoice_id, [])))}
            for inv in invoices]


def reconciliation_rows(deps: Deps, ticket: Ticket) -> list[dict[str, Any]]:
    """Per invoice: expected total under the rules, net paid, refundable and reason codes.

    Taken from the trusted rules' result recorded with the proposal (the ANALYZED transition).
    """
    analyzed = [e for e in tickets.events(deps.sessions, ticket.id, "transition")
                if e.to_state == State.ANALYZED.value]
    if not analyzed:
        return []
    result = analyzed[-1].payload.get("reconciliation", {}).get("invoices", {})
    return [{"invoice": invoice_id, "currency": row["currency"],
             "expected_total": row["expected_total"], "net_paid": row["net_paid"],
             "refundable": row["refundable"], "reasons": ", ".join(row["reasons"])}
            for invoice_id, row in sorted(result.items())]
