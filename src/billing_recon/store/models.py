"""SQLAlchemy 2 models: the billing tables of SPEC §3, tickets and their event log."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from billing_recon.store.types import EmailBytes, Money, UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (for Alembic)."""

    metadata = MetaData(naming_convention=NAMING)


class Customer(Base):
    """A billed customer; ``email`` is stored lower-case."""

    __tablename__ = "customers"
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    tax_rate: Mapped[Decimal] = mapped_column(Numeric(9, 6))
    tax_exempt: Mapped[bool] = mapped_column(Boolean, default=False)


class PriceAgreement(Base):
    """An agreed unit price for a sku over a date range (empty valid_to = open)."""

    __tablename__ = "price_agreements"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id"), index=True)
    sku: Mapped[str] = mapped_column(String(64))
    unit_price: Mapped[Decimal] = mapped_column(Money)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date, nullable=True)


class Subscription(Base):
    """A subscription; invoices after its cancellation are not owed (SPEC §4 rule 3)."""

    __tablename__ = "subscriptions"
    subscription_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id"), index=True)
    sku: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Invoice(Base):
    """An issued invoice with its billed (untrusted) totals."""

    __tablename__ = "invoices"
    invoice_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # No index of its own: ix_invoices_customer_issued (below) starts with customer_id.
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id"))
    subscription_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    period_start: Mapped[date | None] = mapped_column(Date, nullable=True)
    period_end: Mapped[date | None] = mapped_column(Date, nullable=True)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[Decimal] = mapped_column(Money)
    tax: Mapped[Decimal] = mapped_column(Money)
    total: Mapped[Decimal] = mapped_column(Money)


class InvoiceLine(Base):
    """One billed line; its ``amount`` is not trusted."""

    __tablename__ = "invoice_lines"
    line_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.invoice_id"), index=True)
    sku: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    quantity: Mapped[Decimal] = mapped_column(Money)
    unit_price: Mapped[Decimal] = mapped_column(Money)
    amount: Mapped[Decimal] = mapped_column(Money)


class Payment(Base):
    """A payment against an invoice; ``charge_ref`` is the gateway's charge or intent id."""

    __tablename__ = "payments"
    payment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.invoice_id"), index=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    paid_at: Mapped[datetime] = mapped_column(UTCDateTime)
    charge_ref: Mapped[str | None] = mapped_column(String(128), nullable=True)


class Refund(Base):
    """A refund in the ledger: loaded history and the refunds this system executed."""

    __tablename__ = "refunds"
    refund_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.payment_id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    refunded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Unique: the ledger's own exactly-once layer (one row per gateway idempotency key).
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), nullable=True)
    gateway_refund_id: Mapped[str | None] = mapped_column(String(128), nullable=True,
                                                          index=True)
    # Stripe's status (domain/refund_status.py); loaded history is ``succeeded``. Only a later
    # status replaces it; ``failed``/``canceled`` refunds do not count as refunded.
    status: Mapped[str] = mapped_column(String(24), default="succeeded",
                                        server_default="succeeded", index=True)
    failure_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the ticket was escalated for this refund's failure (it is then the operator's).
    failure_escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Credit(Base):
    """A credit note issued against an invoice."""

    __tablename__ = "credits"
    credit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id"), index=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.invoice_id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookEvent(Base):
    """A gateway webhook event as received (signature verified), before and after its work.

    The row is written before the receiver answers 2xx: an event is never lost by a crash
    after the answer, and a duplicate (same id) changes nothing.
    """

    __tablename__ = "webhook_events"
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    refund_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True,
                                                          index=True)
    outcome: Mapped[str | None] = mapped_column(String(200), nullable=True)


class InboundEmail(Base):
    """An email as received, kept verbatim so nothing is ever lost (``raw`` is empty for one
    refused unread, above the size limit: its file, named in ``source``, holds it)."""

    __tablename__ = "inbound_emails"
    email_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    raw: Mapped[bytes] = mapped_column(EmailBytes)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Ticket(Base):
    """One ticket per inbound email; ``version`` is the optimistic lock of the FSM."""

    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email_id: Mapped[str] = mapped_column(ForeignKey("inbound_emails.email_id"), unique=True)
    state: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    sender: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text, default="")
    customer_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    ticket_key: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), nullable=True)
    triage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    scope: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    proposal: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    proposal_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # HMAC of the proposal hash with the signing key (domain/approval.py): a database edit of
    # the proposal, its hash recomputed, is detected at the approval gate and in the worker.
    proposal_mac: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approval_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reply: Mapped[str | None] = mapped_column(Text, nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # "host:pid" of the process whose flow run is paused waiting for this ticket's decision.
    waiter: Mapped[str | None] = mapped_column(String(200), nullable=True)
    approval_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TicketKeyClaim(Base):
    """The first ticket to claim a ticket key owns it; later ones are DUPLICATE (race-safe)."""

    __tablename__ = "ticket_keys"
    ticket_key: Mapped[str] = mapped_column(String(36), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))


class TicketEvent(Base):
    """Append-only event log: every transition and every notable step of a ticket."""

    __tablename__ = "ticket_events"
    __table_args__ = (UniqueConstraint("ticket_id", "seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))  # "transition" or a step name
    from_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ApprovalDecision(Base):
    """A human decision on one exact proposal (bound by its hash)."""

    __tablename__ = "approval_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))  # "approve" | "reject"
    approver: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    proposal_hash: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))  # "cli" | "ui"
    code_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelCall(Base):
    """One model call of a ticket: its answer and usage, so a re-run reuses it instead of paying.

    Unique per (ticket, agent, input hash): the same question is never asked twice.
    ``output`` is None when the answer did not fit the schema (the tokens were spent anyway).
    """

    __tablename__ = "model_calls"
    __table_args__ = (UniqueConstraint("ticket_id", "agent", "input_hash"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    agent: Mapped[str] = mapped_column(String(32))
    input_hash: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    # False: the server sent no usage and the call's upper bound was charged instead.
    usage_reported: Mapped[bool] = mapped_column(Boolean, default=True)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(18, 8), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


Index("ix_invoices_customer_issued", Invoice.customer_id, Invoice.issued_at)
# The global breaker counts recent escalations on every model call.
Index("ix_ticket_events_to_state_at", TicketEvent.to_state, TicketEvent.at)


class Approver(Base):
    """A registered approver (issue 8): a person with a role and a sealed TOTP secret.

    ``secret_sealed`` holds the secret encrypted under the approver key (domain/sealing.py);
    the plain secret exists only in memory while a code is checked. ``locked_at`` is set when
    too many wrong codes came in (issue 14); only an administrator clears it.
    """

    __tablename__ = "approvers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    email: Mapped[str] = mapped_column(String(320))  # lower-case, for separation of duties
    role: Mapped[str] = mapped_column(String(32), default="approver")  # approver|admin|demo
    secret_sealed: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def __repr__(self) -> str:
        return f"Approver(name={self.name!r}, role={self.role!r}, enabled={self.enabled!r})"


class ApproverAudit(Base):
    """Append-only history of the approver registry: who changed whom (``actor`` did ``action``
    to ``approver``), and every wrong one-time code, lockout and unlock."""

    __tablename__ = "approver_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approver: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(16))  # add, disable, wrong_code, lockout...
    actor: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # never the secret
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsedCode(Base):
    """A spent code's decision on one ticket: a resubmission of the same decision (the CLI
    resuming the waiting run) is recognised by it and counts once."""

    __tablename__ = "used_codes"
    __table_args__ = (UniqueConstraint("approver", "ticket_id", "step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approver: Mapped[str] = mapped_column(String(200))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)  # RFC 6238 time step T of the code
    used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SpentCode(Base):
    """A one-time code accepted: once per approver and time step, whatever it was for (one
    command deciding several tickets spends it once; see steps/approval_gate.py)."""

    __tablename__ = "spent_codes"
    __table_args__ = (UniqueConstraint("approver", "step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approver: Mapped[str] = mapped_column(String(200))
    step: Mapped[int] = mapped_column(Integer)  # RFC 6238 time step T of the code
    spent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxMessage(Base):
    """An email to send exactly once: a customer's reply or an approver notice (issue 17).

    ``key`` is unique (``reply:{ticket_key}``, ``notice:{event id}``): queuing it again changes
    nothing. ``message`` holds the complete RFC 5322 bytes, its Message-ID derived from the key,
    so every attempt sends the same message. ``status`` moves queued -> claimed (a sender's
    lease, ``lease_until``) -> sending (committed just before the SMTP DATA command) -> sent;
    a crash while claimed is taken over after the lease, one while sending is ``uncertain``
    (never sent again without an operator: see docs/exactly-once.md); a permanent refusal by
    the server is ``failed``.
    """

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # reply | approval_needed | escalated
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_id: Mapped[str] = mapped_column(String(300))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    message: Mapped[bytes] = mapped_column(EmailBytes)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    holder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MailboxFolder(Base):
    """The UIDVALIDITY last seen for a mailbox folder: a change is logged and the folder read
    again from its first message (tickets are found again by Message-ID, never doubled)."""

    __tablename__ = "mailbox_folders"
    folder: Mapped[str] = mapped_column(String(300), primary_key=True)  # imap://user@host/F
    uidvalidity: Mapped[int] = mapped_column(BigInteger)  # 32 bits unsigned
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
