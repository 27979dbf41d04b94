"""Money consistency across the CSV files of one load and the rows already in the database.

``csv_loader`` checks each file on its own; these checks relate the files to each other. A
payment or a credit must be for its invoice's customer and in its invoice's currency, a refund
in its payment's currency, and the refunds of a payment (in the files and already stored) must
not add up to more than the payment. A referenced invoice or payment is taken from this load's
files when it is there, else from the database, so incremental loads are checked the same way.
A violation raises ``CsvLoadError`` naming file, row and column; the loader then loads nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing_recon.domain.money import fmt
from billing_recon.errors import CsvLoadError
from billing_recon.store.ledger import counted
from billing_recon.store.models import Base, Invoice, Payment, Refund

# Bound the IN (...) lists so no backend's parameter limit is reached (as csv_loader does).
_CHUNK = 500
_ZERO = Decimal("0.00")
_DATABASE = "the database"


class FileRow(Protocol):
    """A parsed CSV row: the 1-based file line it starts on and its values by column name."""

    @property
    def line(self) -> int: ...

    @property
    def values(self) -> Mapping[str, Any]: ...


#: File name (``payments.csv``) -> its parsed rows; a file that is absent has no entry or none.
Rows = Mapping[str, Sequence[FileRow]]


@dataclass(frozen=True)
class _Table:
    """A referenced table: the file its rows come in and its key column."""

    file: str
    model: type[Base]
    key: str
    noun: str


@dataclass(frozen=True)
class _Match:
    """Rows of ``file`` name a ``parent`` row in column ``parent.key`` and must agree with it
    on ``columns``."""

    file: str
    parent: _Table
    columns: tuple[str, ...]


@dataclass(frozen=True)
class _Found:
    """A referenced row's values and where they were read: a file name or the database."""

    values: Mapping[str, Any]
    source: str


_INVOICES = _Table("invoices.csv", Invoice, "invoice_id", "invoice")
_PAYMENTS = _Table("payments.csv", Payment, "payment_id", "payment")
_MATCHES = (
    _Match("payments.csv", _INVOICES, ("customer_id", "currency")),
    _Match("refunds.csv", _PAYMENTS, ("currency",)),
    _Match("credits.csv", _INVOICES, ("customer_id", "currency")),
)


def check_consistency(session: Session, rows: Rows) -> None:
    """Raise CsvLoadError on the first row that contradicts a row it references.

    ``rows`` holds every file's parsed rows, already checked on their own (every reference
    exists, re-loaded rows equal the stored ones); ``session`` is the load's own transaction.
    Currencies are checked before refund totals, so only amounts in one currency are added.
    """
    for match in _MATCHES:
        _check_match(session, rows, match)
    _check_refund_totals(session, rows)


def _check_match(session: Session, rows: Rows, match: _Match) -> None:
    children = rows.get(match.file, ())
    key = match.parent.key
    parents = _lookup(session, rows, match.parent, match.columns,
                      {row.values[key] for row in children})
    for row in children:
        parent = parents.get(row.values[key])
        if parent is None:  # an unknown reference: csv_loader has refused it already
            continue
        for column in match.columns:
            value, expected = row.values[column], parent.values[column]
            if value != expected:
                raise CsvLoadError(
                    match.file, row.line, column,
                    f"{column} {value!r} does not match {match.parent.noun} "
                    f"{row.values[key]!r}, whose {column} is {expected!r} (in {parent.source})",
                )


def _check_refund_totals(session: Session, rows: Rows) -> None:
    refunds = rows.get("refunds.csv", ())
    payment_ids = {row.values["payment_id"] for row in refunds}
    payments = _lookup(session, rows, _PAYMENTS, ("amount",), payment_ids)
    stored = _stored_refunds(session, payment_ids, {row.values["refund_id"] for row in refunds})
    totals = dict(stored)
    for row in refunds:
        payment_id = row.values["payment_id"]
        payment = payments.get(payment_id)
        if payment is None:
            continue
        totals[payment_id] = total = totals.get(payment_id, _ZERO) + row.values["amount"]
        if total > payment.values["amount"]:
            raise CsvLoadError(
                "refunds.csv", row.line, "amount",
                f"refunds of payment {payment_id!r} add up to {fmt(total)} with this row "
                f"({fmt(stored.get(payment_id, _ZERO))} of it already in the database), more "
                f"than the payment's amount {fmt(payment.values['amount'])} "
                f"(in {payment.source})",
            )


def _lookup(
    session: Session, rows: Rows, table: _Table, columns: tuple[str, ...], wanted: set[Any]
) -> dict[Any, _Found]:
    """The ``wanted`` rows of ``table``: from this load's file, else from the database."""
    found = {
        row.values[table.key]: _Found(row.values, table.file)
        for row in rows.get(table.file, ())
        if row.values[table.key] in wanted
    }
    key = getattr(table.model, table.key)
    selected = [getattr(table.model, name) for name in columns]
    for chunk in _chunks(wanted - found.keys()):
        for ident, *values in session.execute(select(key, *selected).where(key.in_(chunk))):
            found[ident] = _Found(dict(zip(columns, values, strict=True)), _DATABASE)
    return found


def _stored_refunds(
    session: Session, payment_ids: set[Any], reloaded: set[Any]
) -> dict[Any, Decimal]:
    """Per payment, the sum of its stored refunds that this load does not carry again.

    Summed here, not with SQL SUM: SQLite keeps money as text and would add it as floats.
    """
    totals: dict[Any, Decimal] = {}
    for chunk in _chunks(payment_ids):
        query = select(Refund.refund_id, Refund.payment_id, Refund.amount)
        for refund_id, payment_id, amount in session.execute(
            query.where(Refund.payment_id.in_(chunk), counted())
        ):
            if refund_id not in reloaded:
                totals[payment_id] = totals.get(payment_id, _ZERO) + amount
    return totals


def _chunks(values: Iterable[Any]) -> Iterator[list[Any]]:
    items = sorted(values)
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
