"""The refund proposal: allocation over payments, canonical JSON and its hash (SPEC §4, §6)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from billing_recon.domain.money import fmt


@dataclass(frozen=True)
class PaymentBalance:
    """A payment and what is still refundable on it."""

    payment_id: str
    invoice_id: str
    charge_ref: str | None
    currency: str
    paid_at: datetime
    remaining: Decimal


class PaymentRefund(BaseModel):
    """One gateway call: refund ``amount`` of one payment."""

    model_config = ConfigDict(frozen=True)
    payment_id: str
    invoice_id: str
    charge_ref: str | None
    amount: Decimal


class CurrencyRefund(BaseModel):
    """The proposed refund in one currency."""

    model_config = ConfigDict(frozen=True)
    currency: str
    amount: Decimal
    invoices: dict[str, Decimal]
    reasons: list[str]
    payments: list[PaymentRefund]


POLICY_VERSION = 1


class Policy(BaseModel):
    """The decision policy frozen on the proposal when it was made (SPEC §6).

    How many different approvers must approve, and the four-eyes thresholds that applied to
    the proposal's currencies; the hash, the proposal MAC and the approval token cover it, so
    a process with other settings can neither lower nor raise it.
    """

    model_config = ConfigDict(frozen=True)
    version: int = POLICY_VERSION
    required_approvals: int = 1
    thresholds: dict[str, Decimal] = {}


class Covered(BaseModel):
    """Money on an invoice of the scope that another ticket already proposed or refunded.

    The proposal does not count it again (``status``: proposed, approved, in_flight,
    refunded); it is shown to the approver beside what is proposed.
    """

    model_config = ConfigDict(frozen=True)
    invoice_id: str
    ticket: str
    amount: Decimal
    status: str


class Proposal(BaseModel):
    """What the approver decides on; bound to the decision by its hash."""

    model_config = ConfigDict(frozen=True)
    ticket_key: str
    customer_id: str
    refunds: list[CurrencyRefund]
    claimed: list[str] = []
    covered: list[Covered] = []
    policy: Policy | None = None  # None only on proposals made before policies were frozen
    # How many of the ticket's refunds had failed when it was made: a retry's proposal never
    # hashes like the first one, so the first one's approvals cannot count for it.
    retry: int = 0

    def canonical(self) -> dict[str, Any]:
        """The fields the hash covers: ticket key, customer, amounts, currency, payments to
        refund, what other tickets cover, and the frozen decision policy."""
        return {
            "ticket_key": self.ticket_key,
            "customer_id": self.customer_id,
            "refunds": [
                {
                    "currency": r.currency,
                    "amount": fmt(r.amount),
                    "invoices": {k: fmt(v) for k, v in sorted(r.invoices.items())},
                    "payments": [
                        {"payment_id": p.payment_id, "charge_ref": p.charge_ref,
                         "amount": fmt(p.amount)}
                        for p in r.payments
                    ],
                }
                for r in self.refunds
            ],
            "covered": [{"invoice_id": c.invoice_id, "ticket": c.ticket,
                         "amount": fmt(c.amount), "status": c.status} for c in self.covered],
            "policy": None if self.policy is None else {
                "version": self.policy.version,
                "required_approvals": self.policy.required_approvals,
                "thresholds": {k: fmt(v) for k, v in sorted(self.policy.thresholds.items())},
            },
        }

    def hash(self) -> str:
        """SHA-256 of the canonical JSON (with ``retry`` only on a retry: first proposals
        keep the hash they always had)."""
        canonical = self.canonical()
        if self.retry:
            canonical["retry"] = self.retry
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def total(self) -> Decimal:
        """Sum over currencies (only meaningful for display when there is one currency)."""
        return sum((r.amount for r in self.refunds), Decimal(0))


def allocate(amount: Decimal, payments: Sequence[PaymentBalance]) -> list[PaymentRefund]:
    """Spread an invoice's refundable amount over its payments, newest first (SPEC §4)."""
    left, out = amount, []
    for pay in sorted(payments, key=lambda p: (p.paid_at, p.payment_id), reverse=True):
        take = min(left, pay.remaining)
        if take > 0:
            out.append(PaymentRefund(payment_id=pay.payment_id, invoice_id=pay.invoice_id,
                                     charge_ref=pay.charge_ref, amount=take))
            left -= take
    if left > 0:
        raise ValueError(f"refundable {amount} exceeds what remains on the payments")
    return out


def build_proposal(
    ticket_key: str,
    customer_id: str,
    invoices: Mapping[str, Mapping[str, Any]],
    payments: Sequence[PaymentBalance],
    claimed: Sequence[str] = (),
) -> Proposal:
    """Group refundable invoices (from the rules' summary) by currency and allocate them."""
    by_currency: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for invoice_id, row in sorted(invoices.items()):
        if Decimal(row["refundable"]) > 0:
            by_currency.setdefault(row["currency"], []).append((invoice_id, row))
    refunds = [_currency_refund(cur, rows, payments) for cur, rows in sorted(by_currency.items())]
    return Proposal(ticket_key=ticket_key, customer_id=customer_id, refunds=refunds,
                    claimed=list(claimed))


def _currency_refund(
    currency: str, rows: list[tuple[str, Mapping[str, Any]]], payments: Sequence[PaymentBalance]
) -> CurrencyRefund:
    allocations: list[PaymentRefund] = []
    for invoice_id, row in rows:
        own = [p for p in payments if p.invoice_id == invoice_id]
        allocations.extend(allocate(Decimal(row["refundable"]), own))
    invoice_amounts = {invoice_id: Decimal(row["refundable"]) for invoice_id, row in rows}
    reasons = sorted({reason for _id, row in rows for reason in row["reasons"]})
    return CurrencyRefund(currency=currency, amount=sum(invoice_amounts.values(), Decimal(0)),
                          invoices=invoice_amounts, reasons=reasons, payments=allocations)
