"""Money other tickets already hold on a customer's invoices, and the lock that orders it.

Exactly once per money owed, not per ticket key: a refund proposed, approved or in flight for
one ticket must not be counted again by another ticket whose scope overlaps (a follow-up email
about the same invoice and another). Three things count:

- a *live* proposal: a ticket in ANALYZED, APPROVAL_PENDING or APPROVED holds every payment
  allocation of its proposal (``proposed`` / ``approved``);
- an *in-flight* gateway call: a ``refund_calls`` claim whose refund is not in the ledger yet,
  whatever its ticket's state (an escalated ticket may have refunded one payment of two); it is
  counted at its ticket's proposed amount for that payment, once per (ticket, payment);
- the ledger itself: executed refunds are rows in ``refunds`` and already lower the net paid
  the rules compute, so they are reported (``refunded``) but never subtracted again.

A rejected, expired or escalated proposal holds nothing (its in-flight calls still count).

Every writer that changes these amounts takes the customer's lock first (``lock_customer``):
a proposal being made, a gateway call being claimed, refunds being recorded. Readers under the
same lock see one consistent picture on PostgreSQL (a row lock) and SQLite (the database's
single writer lock).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine, exists, select, update
from sqlalchemy.orm import Session

from billing_recon.domain.fsm import State
from billing_recon.domain.proposal import Covered, Proposal
from billing_recon.errors import UserInputError
from billing_recon.store.leases import ensure_tables
from billing_recon.store.ledger import calls, counted, metadata
from billing_recon.store.models import Customer, Payment, Refund, Ticket
from billing_recon.store.tickets import format_ticket_id

#: States whose proposal holds its money (until approved money is in the ledger).
LIVE: dict[str, str] = {State.ANALYZED.value: "proposed",
                        State.APPROVAL_PENDING.value: "proposed",
                        State.APPROVED.value: "approved"}


@dataclass(frozen=True)
class Held:
    """Money one other ticket holds on one payment of an invoice in scope."""

    ticket_id: int
    invoice_id: str
    payment_id: str
    amount: Decimal
    status: str  # proposed | approved | in_flight | refunded

    @property
    def counts(self) -> bool:
        """Whether it lowers what may still be refunded (refunded money is in the ledger)."""
        return self.status != "refunded"

    def covered(self) -> Covered:
        """The approver-facing line for it."""
        return Covered(invoice_id=self.invoice_id, ticket=format_ticket_id(self.ticket_id),
                       amount=self.amount, status=self.status)


def lock_customer(session: Session, customer_id: str) -> None:
    """Take the customer's money lock for the rest of the caller's transaction.

    Call it first in the transaction: on SQLite the write it makes takes the database's
    writer lock before anything is read, so what follows reads the newest committed state.
    """
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        done = session.execute(update(Customer).where(Customer.customer_id == customer_id)
                               .values(name=Customer.name)).rowcount  # type: ignore[attr-defined]
    else:
        done = len(session.execute(select(Customer.customer_id).where(
            Customer.customer_id == customer_id).with_for_update()).all())
    if done != 1:
        raise UserInputError(f"no such customer: {customer_id!r}")


def prepare(engine: Engine) -> None:
    """Create the write-ahead table the reads here join (before any lock is taken: on SQLite
    creating it inside a locked transaction would wait on itself)."""
    ensure_tables(engine, metadata)


def held_by_others(session: Session, customer_id: str, invoice_ids: Iterable[str],
                   ticket_id: int | None) -> list[Held]:
    """What tickets other than ``ticket_id`` hold on these invoices of the customer.

    ``prepare`` must have run on the database first.
    """
    wanted = set(invoice_ids)
    flying = _in_flight(session, wanted, ticket_id)
    live = {t.id: t for t in session.scalars(select(Ticket).where(
        Ticket.customer_id == customer_id, Ticket.state.in_(list(LIVE)),
        Ticket.id != (ticket_id or 0)))}
    owners = {tid for tid, _pay in flying} - set(live)
    live |= {t.id: t for t in session.scalars(select(Ticket).where(Ticket.id.in_(owners)))}
    held = [h for t in live.values() for h in _allocations(t, wanted, flying)]
    return [*held, *_refunded(session, wanted, ticket_id)]


def _in_flight(session: Session, invoice_ids: set[str],
               ticket_id: int | None) -> set[tuple[int, str]]:
    """(ticket, payment) of gateway calls claimed but not in the ledger, other tickets only."""
    recorded = exists().where(Refund.idempotency_key == calls.c.key)
    rows = session.execute(
        select(calls.c.ticket_id, calls.c.payment_id)
        .join(Payment, Payment.payment_id == calls.c.payment_id)
        .where(Payment.invoice_id.in_(sorted(invoice_ids)), ~recorded,
               calls.c.ticket_id != (ticket_id or 0)))
    return {(int(t), str(p)) for t, p in rows}


def _allocations(ticket: Ticket, invoice_ids: set[str],
                 flying: set[tuple[int, str]]) -> list[Held]:
    if not ticket.proposal:
        return []
    status = LIVE.get(ticket.state)
    out = []
    for refund in Proposal.model_validate(ticket.proposal).refunds:
        for pay in refund.payments:
            calling = (ticket.id, pay.payment_id) in flying
            if pay.invoice_id in invoice_ids and (status or calling):
                out.append(Held(ticket.id, pay.invoice_id, pay.payment_id, pay.amount,
                                "in_flight" if calling else status or ""))
    return out


def _refunded(session: Session, invoice_ids: set[str], ticket_id: int | None) -> list[Held]:
    rows = session.execute(
        select(Refund.ticket_id, Payment.invoice_id, Refund.payment_id, Refund.amount)
        .join(Payment, Payment.payment_id == Refund.payment_id)
        .where(Payment.invoice_id.in_(sorted(invoice_ids)), Refund.ticket_id.is_not(None),
               Refund.ticket_id != (ticket_id or 0), counted())
        .order_by(Refund.refunded_at))
    return [Held(int(t), str(i), str(p), Decimal(a), "refunded") for t, i, p, a in rows]


def per_invoice(held: Iterable[Held]) -> dict[str, Decimal]:
    """Money held (not yet in the ledger) per invoice."""
    return _sum((h.invoice_id, h.amount) for h in held if h.counts)


def per_payment(held: Iterable[Held]) -> dict[str, Decimal]:
    """Money held (not yet in the ledger) per payment."""
    return _sum((h.payment_id, h.amount) for h in held if h.counts)


def _sum(pairs: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for key, amount in pairs:
        out[key] = out.get(key, Decimal(0)) + amount
    return out


@dataclass(frozen=True)
class Ledger:
    """An invoice's money as the ledger has it now: paid, refunded, per payment."""

    paid: Decimal
    refunded: Decimal
    payments: dict[str, Decimal]  # payment -> amount
    refunded_per_payment: dict[str, Decimal]


def invoice_ledger(session: Session, invoice_id: str) -> Ledger:
    """Sums of the invoice's payments and of the ledger's refunds against them.

    Summed here, not with SQL SUM: SQLite keeps money as text and would add it as floats.
    """
    payments = {str(p): Decimal(a) for p, a in session.execute(
        select(Payment.payment_id, Payment.amount).where(Payment.invoice_id == invoice_id))}
    per_payment = _sum((str(p), Decimal(a)) for p, a in session.execute(
        select(Refund.payment_id, Refund.amount)
        .join(Payment, Payment.payment_id == Refund.payment_id)
        .where(Payment.invoice_id == invoice_id, counted())))
    return Ledger(paid=sum(payments.values(), Decimal(0)),
                  refunded=sum(per_payment.values(), Decimal(0)),
                  payments=payments, refunded_per_payment=per_payment)
