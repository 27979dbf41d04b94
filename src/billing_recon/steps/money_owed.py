"""Exactly once per money owed: what a ticket may propose, and what its worker may pay.

The invariant, for every invoice: its payments minus all its refunds (executed, and held by
any ticket: proposed, approved or in flight) never drop below the invoice's expected total
under the trusted rules (SPEC §4), and no payment is refunded beyond its amount.

- ``propose`` (under the customer's lock) makes a ticket's proposal out of the trusted rules'
  refundable amounts *net of what other tickets hold* on the same invoices, and lists that
  money for the approver (``Proposal.covered``); the decision policy is frozen on it.
- ``rederive`` (the refund worker, before its first gateway call) recomputes from the trusted
  rules over the current source data and refuses a proposal that pays more than that, pays a
  payment outside the ticket's customer's in-scope invoices, or a charge shared by payments.
- ``check_call`` (the refund worker, under the customer's lock, immediately before each
  gateway call is claimed) checks the invariant against the ledger and every other ticket's
  in-flight calls.

The worker counts money that is moving (the ledger, in-flight calls), not other tickets'
proposals: proposals were already netted when this one was made, so two approved proposals
on the same money can only come from outside that path (a bug, an edited database), and then
the first worker to claim its call under the lock pays and the other is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing_recon.config import Settings
from billing_recon.domain import rules_direct
from billing_recon.domain.approval import mac_proposal
from billing_recon.domain.money import fmt
from billing_recon.domain.proposal import (
    CurrencyRefund,
    PaymentRefund,
    Policy,
    Proposal,
    build_proposal,
)
from billing_recon.domain.refund_status import UNDONE
from billing_recon.errors import RefundRefused
from billing_recon.store import billing, commitments, ledger
from billing_recon.store.commitments import Held
from billing_recon.store.ledger import counted
from billing_recon.store.models import Payment, Refund, Ticket
from billing_recon.store.tickets import format_ticket_id

ZERO = Decimal(0)


def policy_for(settings: Settings, refunds: list[CurrencyRefund]) -> Policy:
    """The decision policy that applies to these refunds now (then frozen on the proposal)."""
    limits = dict(settings.approval.four_eyes)
    applied = {r.currency.upper(): limits[r.currency.upper()] for r in refunds
               if r.currency.upper() in limits}
    above = any(r.amount > applied[r.currency.upper()] for r in refunds
                if r.currency.upper() in applied)
    return Policy(required_approvals=2 if above else 1, thresholds=applied)


def frozen(settings: Settings, proposal: Proposal) -> Proposal:
    """The proposal with the decision policy that applies to it now."""
    return proposal.model_copy(update={"policy": policy_for(settings, proposal.refunds)})


def ticket_fields(settings: Settings, proposal: Proposal) -> dict[str, Any]:
    """The ticket columns that store a proposal: its JSON, its hash and its MAC."""
    digest = proposal.hash()
    return {"proposal": proposal.model_dump(mode="json"), "proposal_hash": digest,
            "proposal_mac": mac_proposal(settings.signing_key(), proposal.ticket_key, digest)}


def propose(session: Session, settings: Settings, ticket: Ticket, trusted: dict[str, Any],
            tables: dict[str, pd.DataFrame], claimed: list[str]) -> Proposal:
    """The ticket's proposal: the trusted refundable amounts net of other tickets' money.

    Call it under ``commitments.lock_customer``. ``tables`` are the rows the rules ran on;
    refunds recorded since they were read are taken off too.
    """
    customer = ticket.customer_id or ""
    held = commitments.held_by_others(session, customer, trusted["invoices"], ticket.id)
    since_inv, since_pay = _refunded_since(session, tables)
    inv_held, pay_held = commitments.per_invoice(held), commitments.per_payment(held)
    rows = {inv: {**row, "refundable": fmt(max(ZERO, Decimal(row["refundable"])
                                               - since_inv.get(inv, ZERO)
                                               - inv_held.get(inv, ZERO)))}
            for inv, row in trusted["invoices"].items()}
    balances = [replace(b, remaining=max(ZERO, b.remaining - since_pay.get(b.payment_id, ZERO)
                                         - pay_held.get(b.payment_id, ZERO)))
                for b in billing.payment_balances(tables)]
    base = build_proposal(ticket.ticket_key or "", customer, rows, balances, claimed)
    retry = sum(r.status in UNDONE for r in ledger.of_ticket(session, ticket.id))
    return frozen(settings, base.model_copy(update={"covered": [h.covered() for h in held],
                                                    "retry": retry}))


def _refunded_since(session: Session, tables: dict[str, pd.DataFrame]
                    ) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """Ledger refunds of the scope's payments that the rules' rows did not have yet."""
    payments = tables["payments"]
    invoice_of = dict(zip(payments["payment_id"], payments["invoice_id"], strict=True))
    known = set(tables["refunds"]["refund_id"])
    per_inv: dict[str, Decimal] = {}
    per_pay: dict[str, Decimal] = {}
    rows = session.execute(select(Refund.refund_id, Refund.payment_id, Refund.amount)
                           .where(Refund.payment_id.in_(sorted(invoice_of)), counted()))
    for refund_id, payment_id, amount in rows:
        if refund_id not in known:
            inv = invoice_of[payment_id]
            per_inv[inv] = per_inv.get(inv, ZERO) + Decimal(amount)
            per_pay[payment_id] = per_pay.get(payment_id, ZERO) + Decimal(amount)
    return per_inv, per_pay


def _moving(held: list[Held]) -> list[Held]:
    """Money already moving: refunds in flight at the gateway (and, for the record, in the
    ledger); other tickets' mere proposals are left out (see the module docstring)."""
    return [h for h in held if h.status in ("in_flight", "refunded")]


def _holders(held: list[Held], invoice_id: str) -> list[str]:
    return sorted({format_ticket_id(h.ticket_id) for h in held if h.invoice_id == invoice_id})


def _describe(held: list[Held], invoice_id: str) -> str:
    lines = [f"{fmt(h.amount)} {h.status} in {format_ticket_id(h.ticket_id)}"
             for h in held if h.invoice_id == invoice_id]
    return "; ".join(lines) or "no other ticket's refund on it"


def rederive(session: Session, ticket: Ticket, proposal: Proposal) -> dict[str, Decimal]:
    """Refuse unless the trusted rules over the current data still owe what was approved.

    Returns the expected total of each invoice the proposal pays (for ``check_call``).
    """
    name = format_ticket_id(ticket.id)
    scope = ticket.scope or {}
    if (proposal.ticket_key != ticket.ticket_key or proposal.customer_id != ticket.customer_id
            or not scope.get("invoice_ids")):
        raise RefundRefused(f"{name}: the proposal is not this ticket's (key, customer, scope)")
    tables = billing.scope_tables(session, ticket.customer_id or "", scope["invoice_ids"])
    trusted = rules_direct.trusted_summary(tables)["invoices"]
    _check_payments(session, name, ticket, proposal, tables)
    held = _moving(commitments.held_by_others(session, ticket.customer_id or "", trusted,
                                              ticket.id))
    inv_held = commitments.per_invoice(held)
    expected: dict[str, Decimal] = {}
    for refund in proposal.refunds:
        for inv, amount in refund.invoices.items():
            row = trusted.get(inv)
            if row is None or row["currency"] != refund.currency:
                raise RefundRefused(f"{name}: {inv} is not an in-scope {refund.currency} "
                                    "invoice of the ticket's customer")
            allowed = max(ZERO, Decimal(row["refundable"]) - inv_held.get(inv, ZERO))
            if amount > allowed:
                raise RefundRefused(
                    f"{name}: {inv}: {fmt(amount)} {refund.currency} approved, but the trusted "
                    f"rules owe {fmt(allowed)} now ({_describe(held, inv)})",
                    others=_holders(held, inv),
                    details={"invoice_id": inv, "approved": fmt(amount),
                             "owed": fmt(allowed)})
            expected[inv] = Decimal(row["expected_total"])
        _check_sums(name, refund)
    return expected


def _check_sums(name: str, refund: CurrencyRefund) -> None:
    per_inv: dict[str, Decimal] = {}
    for pay in refund.payments:
        per_inv[pay.invoice_id] = per_inv.get(pay.invoice_id, ZERO) + pay.amount
    if per_inv != dict(refund.invoices) or refund.amount != sum(refund.invoices.values(), ZERO):
        raise RefundRefused(f"{name}: the payments to refund do not add up to the invoices' "
                            "amounts")


def _check_payments(session: Session, name: str, ticket: Ticket, proposal: Proposal,
                    tables: dict[str, pd.DataFrame]) -> None:
    """Each payment is of an in-scope invoice of the ticket's customer, on its own charge."""
    rows = {r.payment_id: r for r in tables["payments"].itertuples(index=False)}
    for refund in proposal.refunds:
        for pay in refund.payments:
            row = rows.get(pay.payment_id)
            if (row is None or row.invoice_id != pay.invoice_id
                    or row.customer_id != ticket.customer_id or row.currency != refund.currency):
                raise RefundRefused(f"{name}: {pay.payment_id} is not a {refund.currency} "
                                    "payment of an in-scope invoice of the ticket's customer")
            if not row.charge_ref or row.charge_ref != pay.charge_ref:
                raise RefundRefused(f"{name}: {pay.payment_id}: the charge to refund is not "
                                    "the payment's own")
            sharing = session.scalar(select(func.count()).select_from(Payment)
                                     .where(Payment.charge_ref == row.charge_ref))
            if sharing != 1:
                raise RefundRefused(f"{name}: {pay.payment_id}: its charge {row.charge_ref} is "
                                    f"shared by {sharing} payments; refusing to refund it")


def own_per_invoice(proposal: Proposal) -> Mapping[str, Decimal]:
    """What the proposal refunds on each invoice."""
    return commitments.per_invoice(
        Held(0, p.invoice_id, p.payment_id, p.amount, "approved")
        for r in proposal.refunds for p in r.payments)


def check_call(session: Session, ticket: Ticket, proposal: Proposal, pay: PaymentRefund,
               expected_total: Decimal) -> None:
    """The invariant for one gateway call, under the customer's lock (taken here, first)."""
    commitments.lock_customer(session, ticket.customer_id or "")
    now = commitments.invoice_ledger(session, pay.invoice_id)
    held = _moving(commitments.held_by_others(session, ticket.customer_id or "",
                                              [pay.invoice_id], ticket.id))
    others = commitments.per_invoice(held).get(pay.invoice_id, ZERO)
    own = own_per_invoice(proposal).get(pay.invoice_id, ZERO)
    left = now.paid - now.refunded - others - own
    name = format_ticket_id(ticket.id)
    if left < expected_total:
        raise RefundRefused(
            f"{name}: refunding {fmt(own)} on {pay.invoice_id} would leave {fmt(left)} paid, "
            f"below its expected total {fmt(expected_total)} ({_describe(held, pay.invoice_id)})",
            others=_holders(held, pay.invoice_id),
            details={"invoice_id": pay.invoice_id, "left": fmt(left),
                     "expected_total": fmt(expected_total)})
    pay_left = (now.payments.get(pay.payment_id, ZERO)
                - now.refunded_per_payment.get(pay.payment_id, ZERO)
                - commitments.per_payment(held).get(pay.payment_id, ZERO) - pay.amount)
    if pay_left < 0:
        raise RefundRefused(f"{name}: {pay.payment_id} would be refunded beyond its amount "
                            f"({_describe(held, pay.invoice_id)})",
                            others=_holders(held, pay.invoice_id),
                            details={"payment_id": pay.payment_id})
