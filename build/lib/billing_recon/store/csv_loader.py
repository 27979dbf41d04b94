"""Import the billing CSV files of SPEC §3: validate every file first, then insert in one go.

Each file is described as data (``TABLES``): its columns, how each cell is parsed, whether it may
be empty and which table it references. Loading is all-or-nothing: any problem raises
``CsvLoadError(file, row, column, message)`` and leaves the database untouched. Re-loading the
same files is a no-op: a row whose key already exists with identical values is counted as
already present; the same key with a different value is an error.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from billing_recon.errors import CsvLoadError
from billing_recon.store.csv_consistency import check_consistency
from billing_recon.store.db import transaction
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

Parser = Callable[[str], Any]

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# Money columns are Numeric(18, 4): 14 integer digits at most.
_MONEY_LIMIT = Decimal(10) ** 14
# Bound the IN (...) lists so no backend's parameter limit is reached.
_CHUNK = 500


# --- cell parsers: each takes a stripped, non-empty cell and raises ValueError ----------------


def _text(raw: str) -> str:
    return raw


def _email(raw: str) -> str:
    if not _EMAIL.fullmatch(raw):
        raise ValueError(f"not an email address: {raw!r}")
    return raw.lower()


def _currency(raw: str) -> str:
    if not _CURRENCY.fullmatch(raw):
        raise ValueError(f"not a 3-letter currency code: {raw!r}")
    return raw.upper()


def _decimal(places: int, limit: Decimal = _MONEY_LIMIT) -> Parser:
    """A parser for a non-negative decimal with at most ``places`` decimal places."""
    step = Decimal(1).scaleb(-places)

    def parse(raw: str) -> Decimal:
        if not _NUMBER.fullmatch(raw):
            raise ValueError(f"not a number: {raw!r}")
        value = Decimal(raw)
        if value < 0:
            raise ValueError(f"must not be negative: {raw!r}")
        if value >= limit:
            raise ValueError(f"too large: {raw!r}")
        if value != value.quantize(step):
            raise ValueError(f"more than {places} decimal places: {raw!r}")
        return value.quantize(step)

    return parse


def _date_value(raw: str) -> date:
    # date.fromisoformat also takes 20260301 and week dates; the contract is YYYY-MM-DD only.
    if not _DATE.fullmatch(raw):
        raise ValueError(f"not an ISO date (YYYY-MM-DD): {raw!r}")
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"not a valid date: {raw!r}") from exc


def _timestamp(raw: str) -> datetime:
    if _DATE.fullmatch(raw):  # a bare date is midnight UTC
        return datetime.combine(_date_value(raw), time(), tzinfo=UTC)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"not an ISO timestamp: {raw!r}") from exc
    if value.tzinfo is None:
        raise ValueError(f"timestamp has no time zone (add Z or +00:00): {raw!r}")
    return value.astimezone(UTC)


def _boolean(raw: str) -> bool:
    try:
        return _BOOLEANS[raw.lower()]
    except KeyError:
        raise ValueError(f"not a boolean (true/false, yes/no, 1/0): {raw!r}") from None


_MONEY = _decimal(2)
_FINE = _decimal(4)  # quantities and unit prices
_TAX_RATE = _decimal(6, limit=Decimal("1.000001"))  # a fraction: 0.20, never 20


# --- table specifications ----------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One CSV column: how a cell is parsed, whether it may be empty, what it references."""

    name: str
    parse: Parser
    required: bool = True
    default: Any = None
    ref: str | None = None  # the table whose key this value must name


@dataclass(frozen=True)
class TableSpec:
    """How one CSV file maps onto one table; ``identity`` is the key re-loads are matched on."""

    file: str
    model: type[Base]
    columns: tuple[Column, ...]
    identity: tuple[str, ...]
    unique: tuple[str, ...] = ()
    required_file: bool = False

    @property
    def table(self) -> str:
        """The database table name."""
        return str(self.model.__tablename__)


def _opt(name: str, parse: Parser, default: Any = None) -> Column:
    return Column(name, parse, required=False, default=default)


def _ref(name: str, table: str) -> Column:
    return Column(name, _text, ref=table)


#: Every file of SPEC §3, in foreign-key order (a table only references tables before it).
TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "customers.csv", Customer,
        (Column("customer_id", _text), Column("name", _text), Column("email", _email),
         Column("currency", _currency), Column("tax_rate", _TAX_RATE),
         _opt("tax_exempt", _boolean, default=False)),
        identity=("customer_id",), unique=("email",), required_file=True,
    ),
    TableSpec(
        "subscriptions.csv", Subscription,
        (Column("subscription_id", _text), _ref("customer_id", "customers"), Column("sku", _text),
         Column("started_at", _timestamp), _opt("cancelled_at", _timestamp)),
        identity=("subscription_id",),
    ),
    TableSpec(
        "price_agreements.csv", PriceAgreement,
        (_ref("customer_id", "customers"), Column("sku", _text), Column("unit_price", _FINE),
         Column("valid_from", _date_value), _opt("valid_to", _date_value)),
        identity=("customer_id", "sku", "valid_from"),  # the CSV has no id column
    ),
    TableSpec(
        "invoices.csv", Invoice,
        (Column("invoice_id", _text), _ref("customer_id", "customers"),
         _opt("subscription_id", _text), Column("issued_at", _timestamp),
         _opt("period_start", _date_value), _opt("period_end", _date_value),
         Column("currency", _currency), Column("subtotal", _MONEY), Column("tax", _MONEY),
         Column("total", _MONEY)),
        identity=("invoice_id",), required_file=True,
    ),
    TableSpec(
        "invoice_lines.csv", InvoiceLine,
        (Column("line_id", _text), _ref("invoice_id", "invoices"), Column("sku", _text),
         _opt("description", _text), Column("quantity", _FINE), Column("unit_price", _FINE),
         Column("amount", _MONEY)),
        identity=("line_id",),
    ),
    TableSpec(
        "payments.csv", Payment,
        (Column("payment_id", _text), _ref("invoice_id", "invoices"),
         _ref("customer_id", "customers"), Column("amount", _MONEY), Column("currency", _currency),
         Column("paid_at", _timestamp), _opt("charge_ref", _text)),
        identity=("payment_id",), unique=("charge_ref",),  # one gateway charge, one payment
    ),
    TableSpec(
        "refunds.csv", Refund,
        (Column("refund_id", _text), _ref("payment_id", "payments"), Column("amount", _MONEY),
         Column("currency", _currency), Column("refunded_at", _timestamp),
         _opt("idempotency_key", _text)),
        identity=("refund_id",), unique=("idempotency_key",),
    ),
    TableSpec(
        "credits.csv", Credit,
        (Column("credit_id", _text), _ref("customer_id", "customers"),
         _ref("invoice_id", "invoices"), Column("amount", _MONEY), Column("currency", _currency),
         Column("issued_at", _timestamp)),
        identity=("credit_id",),
    ),
)
_BY_TABLE = {spec.table: spec for spec in TABLES}


# --- reading and parsing the files ---------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    line: int  # 1-based line of the record's first line in the file (the header is line 1)
    values: dict[str, Any]


@dataclass(frozen=True)
class _Parsed:
    spec: TableSpec
    rows: list[_Row]
    header: frozenset[str]  # the spec's columns present in the file


def _read_file(spec: TableSpec, data_dir: Path) -> _Parsed:
    path = data_dir / spec.file
    if not path.is_file():
        if spec.required_file:
            raise CsvLoadError(spec.file, None, None, f"required file is missing in {data_dir}")
        return _Parsed(spec, [], frozenset())
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:  # -sig: a BOM is accepted
            return _parse_records(spec, _records(spec.file, fh))
    except UnicodeDecodeError as exc:
        raise CsvLoadError(spec.file, None, None, f"not valid UTF-8: {exc}") from exc


def _records(file: str, fh: TextIO) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(fh, strict=True)
    start = 1
    try:
        for cells in reader:
            yield start, cells
            start = reader.line_num + 1  # a quoted cell may span lines
    except csv.Error as exc:
        raise CsvLoadError(file, start, None, f"malformed CSV: {exc}") from exc


def _parse_records(spec: TableSpec, records: Iterator[tuple[int, list[str]]]) -> _Parsed:
    first = next(records, None)
    if first is None:
        raise CsvLoadError(spec.file, 1, None, "empty file: no header row")
    header = [name.strip().lower() for name in first[1]]
    index = _header_index(spec, header)
    rows = [
        _parse_row(spec, index, len(header), line, cells)
        for line, cells in records
        if any(cell.strip() for cell in cells)  # blank lines carry no data
    ]
    return _Parsed(spec, rows, frozenset(index))


def _header_index(spec: TableSpec, header: list[str]) -> dict[str, int]:
    index = {name: header.index(name) for name in {c.name for c in spec.columns} if name in header}
    for col in spec.columns:
        if col.required and col.name not in index:
            raise CsvLoadError(spec.file, 1, col.name, "required column is missing")
    return index


def _parse_row(
    spec: TableSpec, index: dict[str, int], width: int, line: int, cells: list[str]
) -> _Row:
    if len(cells) > width:
        raise CsvLoadError(spec.file, line, None, f"{len(cells)} cells but {width} columns")
    values: dict[str, Any] = {}
    for col in spec.columns:
        pos = index.get(col.name)
        raw = cells[pos] if pos is not None and pos < len(cells) else ""
        values[col.name] = _parse_cell(spec.file, line, col, raw.strip())
    return _Row(line, values)


def _parse_cell(file: str, line: int, col: Column, raw: str) -> Any:
    if not raw:
        if col.required:
            raise CsvLoadError(file, line, col.name, "required value is empty")
        return col.default
    try:
        return col.parse(raw)
    except ValueError as exc:
        raise CsvLoadError(file, line, col.name, str(exc)) from exc


# --- checks against the other files and the database ---------------------------------------


def _key(spec: TableSpec, values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(values[name] for name in spec.identity)


def _chunks(values: Iterable[Any]) -> Iterator[list[Any]]:
    items = sorted(values)
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _db_keys(session: Session, spec: TableSpec, wanted: set[Any]) -> set[Any]:
    column = getattr(spec.model, spec.identity[0])
    found: set[Any] = set()
    for chunk in _chunks(wanted):
        found.update(session.scalars(select(column).where(column.in_(chunk))))
    return found


def _check_refs(session: Session, parsed: _Parsed, file_keys: dict[str, set[Any]]) -> None:
    for col in parsed.spec.columns:
        if col.ref is None:
            continue
        target = _BY_TABLE[col.ref]
        used = {row.values[col.name] for row in parsed.rows} - {None}
        missing = used - file_keys[col.ref]
        missing -= _db_keys(session, target, missing)
        for row in parsed.rows:
            if row.values[col.name] in missing:
                raise CsvLoadError(
                    parsed.spec.file, row.line, col.name,
                    f"unknown {target.identity[0]} {row.values[col.name]!r}: "
                    f"not in {target.file} nor in the database",
                )


def _existing(session: Session, parsed: _Parsed) -> dict[tuple[Any, ...], Base]:
    spec = parsed.spec
    column = getattr(spec.model, spec.identity[0])
    found: dict[tuple[Any, ...], Base] = {}
    for chunk in _chunks({row.values[spec.identity[0]] for row in parsed.rows}):
        for obj in session.scalars(select(spec.model).where(column.in_(chunk))):
            found[tuple(getattr(obj, name) for name in spec.identity)] = obj
    return found


def _show(value: Any) -> str:
    return "empty" if value is None else str(value)


def _check_same(parsed: _Parsed, row: _Row, stored: Base) -> None:
    # Columns absent from the file say nothing about the stored row, so they are not compared.
    for col in parsed.spec.columns:
        old, new = getattr(stored, col.name), row.values[col.name]
        if col.name in parsed.header and old != new:
            raise CsvLoadError(
                parsed.spec.file, row.line, col.name,
                f"already exists with a different value (database: {_show(old)}, "
                f"file: {_show(new)})",
            )


def _check_unique(session: Session, parsed: _Parsed) -> None:
    spec = parsed.spec
    for name in spec.unique:
        owners: dict[Any, tuple[Any, ...]] = {}
        for row in parsed.rows:
            value, key = row.values[name], _key(spec, row.values)
            if value is not None and owners.setdefault(value, key) != key:
                raise CsvLoadError(spec.file, row.line, name,
                                   f"{value!r} is also used by {owners[value][0]!r} in this file")
        stored = _db_owners(session, spec, name, set(owners))
        for row in parsed.rows:
            owner = stored.get(row.values[name])
            if owner is not None and owner != _key(spec, row.values):
                raise CsvLoadError(
                    spec.file, row.line, name,
                    f"{row.values[name]!r} already belongs to {owner[0]!r} in the database",
                )


def _db_owners(
    session: Session, spec: TableSpec, name: str, values: set[Any]
) -> dict[Any, tuple[Any, ...]]:
    column, key = getattr(spec.model, name), getattr(spec.model, spec.identity[0])
    owners: dict[Any, tuple[Any, ...]] = {}
    for chunk in _chunks(values):
        for value, owner in session.execute(select(column, key).where(column.in_(chunk))):
            owners[value] = (owner,)
    return owners


# --- planning and loading ------------------------------------------------------------------


@dataclass(frozen=True)
class LoadReport:
    """What a load did, per table name: rows inserted and rows already present (identical)."""

    inserted: dict[str, int]
    already_present: dict[str, int]

    @property
    def total_inserted(self) -> int:
        """Rows inserted over all tables."""
        return sum(self.inserted.values())

    def summary(self) -> str:
        """One line per table, for the CLI."""
        return "\n".join(
            f"{name}: {count} inserted, {self.already_present[name]} already present"
            for name, count in self.inserted.items()
        )


def _plan(
    session: Session, parsed: _Parsed, file_keys: dict[str, set[Any]]
) -> tuple[list[_Row], int]:
    """The rows to insert and the number already present; raises on any conflict."""
    spec = parsed.spec
    _check_refs(session, parsed, file_keys)
    existing = _existing(session, parsed)
    seen: dict[tuple[Any, ...], int] = {}
    new: list[_Row] = []
    present = 0
    for row in parsed.rows:
        key = _key(spec, row.values)
        if key in seen:
            raise CsvLoadError(spec.file, row.line, ", ".join(spec.identity),
                               f"duplicate key {_show(key[0])}: same as row {seen[key]}")
        seen[key] = row.line
        if key in existing:
            _check_same(parsed, row, existing[key])
            present += 1
        else:
            new.append(row)
    _check_unique(session, parsed)
    return new, present


def _file_keys(parsed: Sequence[_Parsed]) -> dict[str, set[Any]]:
    return {
        p.spec.table: {row.values[p.spec.identity[0]] for row in p.rows}
        for p in parsed
        if len(p.spec.identity) == 1
    }


def load_directory(sessions: sessionmaker[Session], data_dir: Path) -> LoadReport:
    """Validate every SPEC §3 file in ``data_dir``, then insert all new rows in one transaction.

    Raises CsvLoadError (naming file, row and column) on the first problem; nothing is loaded then.
    """
    parsed = [_read_file(spec, Path(data_dir)) for spec in TABLES]
    keys = _file_keys(parsed)
    inserted: dict[str, int] = {}
    present: dict[str, int] = {}
    with transaction(sessions) as session:
        # Validation reads in the same transaction, so what was checked is what gets written.
        plans = [(p.spec, *_plan(session, p, keys)) for p in parsed]
        check_consistency(session, {p.spec.file: p.rows for p in parsed})
        for spec, new, already in plans:
            session.add_all(spec.model(**row.values) for row in new)
            session.flush()  # insert in foreign-key order, table by table
            inserted[spec.table], present[spec.table] = len(new), already
    return LoadReport(inserted, present)
