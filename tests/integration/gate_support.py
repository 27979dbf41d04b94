"""A migrated database with pending tickets and approvers, for the approval tests."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing_recon.domain import totp
from billing_recon.domain.proposal import CurrencyRefund, PaymentRefund, Proposal
from billing_recon.domain.ticket_key import ticket_key
from billing_recon.errors import ApprovalRefused
from billing_recon.payments.gateway_store import GatewayStore
from billing_recon.steps import approval_gate, money_owed
from billing_recon.steps.approver_identity import Identity, prove
from billing_recon.steps.deps import Deps
from billing_recon.store import approvers, tickets
from billing_recon.store.models import Customer, InboundEmail, Invoice, Payment, Ticket


class Gate:
    """A migrated database with pending tickets to decide and approvers to enroll."""

    def __init__(self, deps: Deps) -> None:
        self.deps, self.seq = deps, 0

    def four_eyes(self, currency: str, amount: str) -> None:
        """Two approvers above ``amount`` from now on."""
        self.approval(four_eyes={currency: Decimal(amount)})

    def approval(self, **changes: object) -> None:
        """These approval settings from now on."""
        settings = self.deps.settings
        section = settings.approval.model_copy(update=changes)
        self.deps = dataclasses.replace(
            self.deps, settings=settings.model_copy(update={"approval": section}))

    def enroll(self, name: str, email: str | None = None, role: str = "approver") -> str:
        """Enroll ``name`` with a fresh secret; returns the secret (the app's copy)."""
        secret = totp.new_secret()
        approvers.add(self.deps.sessions, self.deps.settings.approver_key(), name=name,
                      email=email or f"{name}@finance.example", role=role, secret=secret,
                      actor="test")
        return secret

    def pending(self, amount: str = "6.60", sender: str | None = None,
                customer_email: str | None = None) -> Ticket:
        """A ticket awaiting approval of a one-payment USD refund of ``amount``."""
        self.seq += 1
        n, day = self.seq, datetime(2026, 3, 1, 9, tzinfo=UTC)
        email, invoice = customer_email or f"cust{n}@example.com", f"INV-{n:06d}"
        pay = PaymentRefund(payment_id=f"PAY-{n}", invoice_id=invoice, charge_ref=f"ch_{n}",
                            amount=Decimal(amount))
        proposal = money_owed.frozen(self.deps.settings, Proposal(
            ticket_key=ticket_key(email, [invoice]), customer_id=f"C{n}",
            refunds=[CurrencyRefund(currency="USD", amount=Decimal(amount),
                                    invoices={invoice: Decimal(amount)},
                                    reasons=["price_overcharge"], payments=[pay])]))
        with self.deps.sessions() as s, s.begin():
            s.add(Customer(customer_id=f"C{n}", name=f"Customer {n}", email=email,
                           currency="USD", tax_rate=Decimal("0.10"), tax_exempt=False))
            s.add(InboundEmail(email_id=f"<m{n}@test>", source=None, raw=""))
            s.flush()
            s.add(Invoice(invoice_id=invoice, customer_id=f"C{n}", issued_at=day,
                          currency="USD", subtotal=Decimal(5000), tax=Decimal(0),
                          total=Decimal(5000)))
            s.flush()
            s.add(Payment(payment_id=pay.payment_id, invoice_id=invoice, customer_id=f"C{n}",
                          amount=Decimal(5000), currency="USD", paid_at=day,
                          charge_ref=pay.charge_ref))
            ticket = Ticket(email_id=f"<m{n}@test>", state="APPROVAL_PENDING", version=1,
                            sender=sender or email, subject="refund", customer_id=f"C{n}",
                            ticket_key=proposal.ticket_key,
                            scope={"customer_id": f"C{n}", "invoice_ids": [invoice]},
                            **money_owed.ticket_fields(self.deps.settings, proposal))
            s.add(ticket)
        return ticket

    def decide(self, ticket: Ticket, by: str, code: str = "", approve: bool = True,
               proof: Identity | None = None) -> Ticket:
        """Submit a decision (with ``proof``: one of a command's, as the CLI does)."""
        return approval_gate.record_decision(self.deps, ticket.id, approval_gate.Decision(
            approve, by, ticket.proposal_hash or "", "cli", code=code), f"cli:{by}", proof)

    def prove(self, by: str, code: str) -> Identity:
        """Check and spend a code once for a command, as the CLI does before deciding."""
        return prove(self.deps, by, code, f"cli:{by}", {"channel": "cli"})

    def state(self, ticket: Ticket) -> str:
        """The ticket's current state."""
        return tickets.get(self.deps.sessions, ticket.id).state

    def gateway_refunds(self) -> list[object]:
        """Every refund the embedded gateway made."""
        store = GatewayStore(self.deps.settings.gateway.db_url)
        try:
            return list(store.list_refunds())
        finally:
            store.close()


def now_code(secret: str, steps: int = 0) -> str:
    """The code an app shows now (or ``steps`` periods later)."""
    return totp.code_at(secret, time.time() + steps * totp.STEP_S)


def refused(gate: Gate, ticket: Ticket, match: str, by: str, code: str = "",
            approve: bool = True) -> None:
    """The decision is refused with ``match``, logged without its code, and changes nothing."""
    before = len(tickets.events(gate.deps.sessions, ticket.id, "approval_refused"))
    with pytest.raises(ApprovalRefused, match=match):
        gate.decide(ticket, by, code, approve)
    logged = tickets.events(gate.deps.sessions, ticket.id, "approval_refused")
    assert len(logged) == before + 1 and "code" not in logged[-1].payload
    assert gate.state(ticket) == "APPROVAL_PENDING"


def wrong_code(secret: str) -> str:
    """A code the approver's app shows at no step near now (so it counts as a wrong one)."""
    near = {now_code(secret, steps) for steps in range(-3, 4)}
    return next(code for code in ("000000", "111111", "222222", "333333", "444444",
                                  "555555", "666666", "777777") if code not in near)
