"""Billing queries, always parameterised and scoped to one customer (SPEC §5)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from billing_recon.domain.proposal import PaymentBalance
from billing_recon.store.ledger import counted
from billing_recon.store.models import (
    Base,
    Credit,
    Customer,
    Invoice,
    InvoiceLine,
    Payment,
    PriceAgreement,
    Refund,
    Subscription,
)

# SPEC §3 column order of every table handed to the rules and the sandbox.
COLUMNS: dict[str, list[str]] = {
    "customers": ["customer_id", "name", "email", "currency", "tax_rate", "tax_exempt"],
    "price_agreements": ["customer_id", "sku", "unit_price", "valid_from", "valid_to"],
    "subscriptions": ["subscription_id", "customer_id", "sku", "started_at", "cancelled_at"],
    "invoices": ["invoice_id", "customer_id", "subscription_id", "issued_at", "period_start",
                 "period_end", "currency", "subtotal", "tax", "total"],
    "invoice_lines": ["line_id", "invoice_id", "sku", "description", "quantity", "unit_price",
                      "amount"],
    "payments": ["payment_id", "invoice_id", "customer_id", "amount", "currency", "paid_at",
                 "charge_ref"],
    "refunds": ["refund_id", "payment_id", "amount", "currency", "refunded_at",
                "idempotency_key"],
    "credits": ["credit_id", "customer_id", "invoice_id", "amount", "currency", "issued_at"],
}


def customer_by_email(session: Session, email: str) -> Customer | None:
    """The customer whose email is ``email`` (trimmed, case-insensitive)."""
    return session.scalar(select(Customer).where(Customer.email == email.strip().lower()))


def invoice_owners(session: Session, invoice_ids: Iterable[str]) -> dict[str, str]:
    """Invoice id -> owning customer id, for the ids that exist."""
    ids = sorted(set(invoice_ids))
    if not ids:
        return {}
    rows = session.execute(select(Invoice.invoice_id, Invoice.customer_id)
                           .where(Invoice.invoice_id.in_(ids)))
    return {invoice_id: customer_id for invoice_id, customer_id in rows}


def customer_invoice_ids(session: Session, customer_id: str) -> list[str]:
    """Every invoice id of a customer."""
    query = select(Invoice.invoice_id).where(Invoice.customer_id == customer_id)
    return sorted(session.scalars(query))


def _text(value: Any) -> str:
    """The CSV form of a stored value (SPEC §3)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        # PostgreSQL hands back the column scale (12.5000); the CSV form has two places.
        cents = value.quantize(Decimal("0.01"))
        return f"{cents:.2f}" if cents == value else format(value.normalize(), "f")
    return str(value)


def _frame(rows: Sequence[Base], table: str) -> pd.DataFrame:
    columns = COLUMNS[table]
    data = [[_text(getattr(row, col)) for col in columns] for row in rows]
    return pd.DataFrame(data, columns=columns, dtype=object)


def scope_tables(session: Session, customer_id: str, invoice_ids: Sequence[str]
                 ) -> dict[str, pd.DataFrame]:
    """Every row the rules need for these invoices of this customer, as CSV-form strings."""
    inv = list(session.scalars(select(Invoice).where(
        Invoice.customer_id == customer_id, Invoice.invoice_id.in_(invoice_ids))
        .order_by(Invoice.invoice_id)))
    ids = [i.invoice_id for i in inv]
    pays = list(session.scalars(select(Payment).where(Payment.invoice_id.in_(ids))
                                .order_by(Payment.payment_id)))
    sub_ids = sorted({i.subscription_id for i in inv if i.subscription_id})
    rows: dict[str, Sequence[Base]] = {
        "customers": [c for c in [session.get(Customer, customer_id)] if c is not None],
        "price_agreements": list(session.scalars(select(PriceAgreement).where(
            PriceAgreement.customer_id == customer_id).order_by(PriceAgreement.id))),
        "subscriptions": list(session.scalars(select(Subscription).where(
            Subscription.subscription_id.in_(sub_ids), Subscription.customer_id == customer_id))),
        "invoices": inv,
        "invoice_lines": list(session.scalars(select(InvoiceLine).where(
            InvoiceLine.invoice_id.in_(ids)).order_by(InvoiceLine.line_id))),
        "payments": pays,
        "refunds": list(session.scalars(select(Refund).where(  # failed ones are owed again
            Refund.payment_id.in_([p.payment_id for p in pays]), counted())
            .order_by(Refund.refund_id))),
        "credits": list(session.scalars(select(Credit).where(
            Credit.invoice_id.in_(ids), Credit.customer_id == customer_id)
            .order_by(Credit.credit_id))),
    }
    return {name: _frame(table_rows, name) for name, table_rows in rows.items()}


def to_csv_files(tables: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    """The tables as SPEC §3 CSV files, for the sandbox: the bytes of `DataFrame.to_csv`.

    Frames of text (what `scope_tables` returns) are written by the csv module directly, as
    pandas itself does for them but without its per-frame set-up (about 1 ms for a scope's
    eight small frames); anything else goes through pandas.
    """
    out: dict[str, bytes] = {}
    for name, frame in tables.items():
        buffer = io.StringIO()
        rows = frame.to_numpy().tolist()
        if all(isinstance(cell, str) for row in rows for cell in row) and all(
                isinstance(column, str) for column in frame.columns):
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(frame.columns)
            writer.writerows(rows)
        else:
            frame.to_csv(buffer, index=False)
        out[f"{name}.csv"] = buffer.getvalue().encode()
    return out


def payment_balances(tables: dict[str, pd.DataFrame]) -> list[PaymentBalance]:
    """What is still refundable on each payment in scope (amount minus prior refunds)."""
    refunded: dict[str, Decimal] = {}
    for row in tables["refunds"].itertuples(index=False):
        refunded[row.payment_id] = refunded.get(row.payment_id, Decimal(0)) + Decimal(row.amount)
    return [
        PaymentBalance(payment_id=row.payment_id, invoice_id=row.invoice_id,
                       charge_ref=row.charge_ref or None, currency=row.currency,
                       paid_at=datetime.fromisoformat(row.paid_at),
                       remaining=Decimal(row.amount) - refunded.get(row.payment_id, Decimal(0)))
        for row in tables["payments"].itertuples(index=False)
    ]
