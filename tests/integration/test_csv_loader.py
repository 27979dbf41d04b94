"""The CSV loader of SPEC §3 on SQLite and PostgreSQL: exact, idempotent, all-or-nothing."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from billing_recon.errors import CsvLoadError
from billing_recon.store.csv_loader import load_directory
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
from billing_recon.store.sample_data import SampleSet, generate

MODELS: dict[str, type[Base]] = {
    "customers.csv": Customer,
    "subscriptions.csv": Subscription,
    "price_agreements.csv": PriceAgreement,
    "invoices.csv": Invoice,
    "invoice_lines.csv": InvoiceLine,
    "payments.csv": Payment,
    "refunds.csv": Refund,
    "credits.csv": Credit,
}
MONEY = {
    "invoices.csv": ("invoice_id", ("subtotal", "tax", "total")),
    "invoice_lines.csv": ("line_id", ("quantity", "unit_price", "amount")),
    "payments.csv": ("payment_id", ("amount",)),
    "refunds.csv": ("refund_id", ("amount",)),
    "credits.csv": ("credit_id", ("amount",)),
    "customers.csv": ("customer_id", ("tax_rate",)),
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    """One generated sample set, shared read-only."""
    return generate(tmp_path_factory.mktemp("sample"))


@pytest.fixture
def data_dir(sample: SampleSet, tmp_path: Path) -> Path:
    """A private copy of the sample CSVs that a test may edit."""
    return Path(shutil.copytree(sample.data_dir, tmp_path / "data"))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def write_rows(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, header or list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def edit_cell(data_dir: Path, file: str, line: int, column: str, value: str) -> None:
    """Set one cell; ``line`` is the file line (the first data row is line 2)."""
    rows = read_rows(data_dir / file)
    rows[line - 2][column] = value
    write_rows(data_dir / file, rows)


def counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        return {
            file: session.scalar(select(func.count()).select_from(model)) or 0
            for file, model in MODELS.items()
        }


def file_counts(data_dir: Path) -> dict[str, int]:
    return {file: len(read_rows(data_dir / file)) for file in MODELS}


def test_loading_sample_set_populates_every_table(
    sessions: sessionmaker[Session], data_dir: Path
) -> None:
    report = load_directory(sessions, data_dir)
    expected = file_counts(data_dir)
    assert counts(sessions) == expected
    assert all(n > 0 for n in expected.values())
    assert report.inserted == {MODELS[f].__tablename__: n for f, n in expected.items()}
    assert set(report.already_present.values()) == {0}


def test_loaded_money_is_exact_decimal(sessions: sessionmaker[Session], data_dir: Path) -> None:
    load_directory(sessions, data_dir)
    with sessions() as session:
        for file, (key, columns) in MONEY.items():
            for row in read_rows(data_dir / file):
                stored = session.get(MODELS[file], row[key])
                for column in columns:
                    value = getattr(stored, column)
                    assert isinstance(value, Decimal), (file, column)
                    assert value == Decimal(row[column]), (file, row[key], column)


def test_loaded_values_are_normalised(sessions: sessionmaker[Session], data_dir: Path) -> None:
    load_directory(sessions, data_dir)
    with sessions() as session:
        emails = set(session.scalars(select(Customer.email)))
        seat = session.scalars(
            select(PriceAgreement).where(PriceAgreement.valid_from == date(2026, 3, 1))
        ).one()
        refund = session.scalars(select(Refund)).one()
        bare = session.get(Subscription, "SUB-002")  # started_at written as a bare date
        flags = session.execute(select(Customer.name, Customer.tax_exempt))
        exempt = {name: flag for name, flag in flags}
    assert "ops@brightwave.example" in emails  # written as " Ops@Brightwave.example "
    assert (seat.unit_price, seat.valid_to) == (Decimal("7.4050"), None)
    assert refund.refunded_at == datetime(2026, 3, 18, 10, 0, tzinfo=UTC)  # was 11:00+01:00
    assert bare is not None and bare.started_at == datetime(2025, 2, 2, tzinfo=UTC)
    assert exempt["Evergreen Youth Foundation"] is True
    assert exempt["Quartz Logistics"] is False and exempt["Redwood Legal LLP"] is False


def test_reloading_is_a_no_op(sessions: sessionmaker[Session], data_dir: Path) -> None:
    load_directory(sessions, data_dir)
    before = counts(sessions)
    report = load_directory(sessions, data_dir)
    assert counts(sessions) == before
    assert report.total_inserted == 0
    assert report.already_present == {MODELS[f].__tablename__: n for f, n in before.items()}


def second_load(data_dir: Path, tmp_path: Path, files: dict[str, list[dict[str, str]]]) -> Path:
    """A directory for a later, incremental load: the required files empty, plus ``files``."""
    extra = tmp_path / "extra"
    extra.mkdir()
    for file in ("customers.csv", "invoices.csv"):
        write_rows(extra / file, [], header=list(read_rows(data_dir / file)[0]))
    for file, rows in files.items():
        write_rows(extra / file, rows)
    return extra


def test_reference_to_a_row_already_in_the_database_is_accepted(
    sessions: sessionmaker[Session], data_dir: Path, tmp_path: Path
) -> None:
    load_directory(sessions, data_dir)
    credit = {"credit_id": "CN-900001", "customer_id": "CUST-001", "invoice_id": "INV-000001",
              "amount": "5.00", "currency": "usd", "issued_at": "2026-04-01"}
    extra = second_load(data_dir, tmp_path, {"credits.csv": [credit]})
    report = load_directory(sessions, extra)
    assert report.inserted["credits"] == 1
    with sessions() as session:
        stored = session.get(Credit, "CN-900001")
    assert stored is not None and stored.currency == "USD"


def test_extra_columns_are_ignored(sessions: sessionmaker[Session], data_dir: Path) -> None:
    rows = read_rows(data_dir / "customers.csv")
    for row in rows:
        row["account_manager"] = "Pat"
    write_rows(data_dir / "customers.csv", rows)
    load_directory(sessions, data_dir)
    assert counts(sessions)["customers.csv"] == len(rows)


def test_utf8_bom_is_accepted(sessions: sessionmaker[Session], data_dir: Path) -> None:
    path = data_dir / "customers.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    load_directory(sessions, data_dir)
    assert counts(sessions) == file_counts(data_dir)


@pytest.mark.parametrize(("cell", "flag"), [("TRUE", True), ("yes", True), ("1", True),
                                           ("No", False), ("0", False), ("", False)])
def test_tax_exempt_accepts_the_usual_boolean_spellings(
    sessions: sessionmaker[Session], data_dir: Path, cell: str, flag: bool
) -> None:
    edit_cell(data_dir, "customers.csv", 2, "tax_exempt", cell)
    load_directory(sessions, data_dir)
    with sessions() as session:
        customer = session.get(Customer, "CUST-001")
    assert customer is not None and customer.tax_exempt is flag


def test_optional_files_may_be_absent(sessions: sessionmaker[Session], data_dir: Path) -> None:
    for file in MODELS:
        if file not in ("customers.csv", "invoices.csv"):
            (data_dir / file).unlink()
    report = load_directory(sessions, data_dir)
    assert report.inserted["invoice_lines"] == 0
    assert counts(sessions)["invoices.csv"] == len(read_rows(data_dir / "invoices.csv"))


def _drop_column(file: str, column: str) -> Callable[[Path], None]:
    def edit(data_dir: Path) -> None:
        rows = read_rows(data_dir / file)
        for row in rows:
            del row[column]
        write_rows(data_dir / file, rows)

    return edit


def _cell(file: str, line: int, column: str, value: str) -> Callable[[Path], None]:
    return lambda data_dir: edit_cell(data_dir, file, line, column, value)


def _multiline_then_bad(data_dir: Path) -> None:
    # A quoted cell spanning two lines: the next record starts one line further down.
    edit_cell(data_dir, "invoice_lines.csv", 2, "description", "Plan,\nmonthly")
    edit_cell(data_dir, "invoice_lines.csv", 3, "amount", "lots")


# (edit, file, row, column, words the message must contain)
BAD_INPUTS = {
    "missing required file": (lambda d: (d / "invoices.csv").unlink(), "invoices.csv", None,
                              None, "missing"),
    "missing column": (_drop_column("payments.csv", "amount"), "payments.csv", 1, "amount",
                       "missing"),
    "bad number": (_cell("payments.csv", 4, "amount", "12.3.4"), "payments.csv", 4, "amount",
                   "not a number"),
    "three decimal places": (_cell("credits.csv", 3, "amount", "10.005"), "credits.csv", 3,
                             "amount", "decimal places"),
    "bad date": (_cell("price_agreements.csv", 3, "valid_from", "2026-02-30"),
                 "price_agreements.csv", 3, "valid_from", "date"),
    "naive timestamp": (_cell("refunds.csv", 2, "refunded_at", "2026-03-18T11:00:00"),
                        "refunds.csv", 2, "refunded_at", "time zone"),
    "bad boolean": (_cell("customers.csv", 5, "tax_exempt", "maybe"), "customers.csv", 5,
                    "tax_exempt", "boolean"),
    "bad currency": (_cell("payments.csv", 2, "currency", "US$"), "payments.csv", 2, "currency",
                     "currency"),
    "empty required cell": (_cell("invoice_lines.csv", 6, "sku", " "), "invoice_lines.csv", 6,
                            "sku", "empty"),
    "unknown customer": (_cell("credits.csv", 2, "customer_id", "CUST-999"), "credits.csv", 2,
                         "customer_id", "CUST-999"),
    "unknown payment": (_cell("refunds.csv", 2, "payment_id", "PAY-999999"), "refunds.csv", 2,
                        "payment_id", "PAY-999999"),
    "duplicate key": (_cell("invoices.csv", 3, "invoice_id", "INV-000001"), "invoices.csv", 3,
                      "invoice_id", "duplicate"),
    "duplicate email": (_cell("customers.csv", 3, "email", "AP@acme-robotics.example"),
                        "customers.csv", 3, "email", "ap@acme-robotics.example"),
    "row after a multi-line cell": (_multiline_then_bad, "invoice_lines.csv", 4, "amount",
                                    "not a number"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_row_and_column_and_loads_nothing(
    sessions: sessionmaker[Session], data_dir: Path, case: str
) -> None:
    edit, file, row, column, words = BAD_INPUTS[case]
    edit(data_dir)
    with pytest.raises(CsvLoadError) as info:
        load_directory(sessions, data_dir)
    err = info.value
    assert (err.file, err.row, err.column) == (file, row, column)
    message = str(err)
    assert file in message and words in message
    assert row is None or f"row {row}" in message
    assert column is None or repr(column) in message
    assert set(counts(sessions).values()) == {0}


def test_conflicting_reload_names_the_cell_and_changes_nothing(
    sessions: sessionmaker[Session], data_dir: Path
) -> None:
    load_directory(sessions, data_dir)
    before = counts(sessions)
    edit_cell(data_dir, "invoices.csv", 2, "total", "1.00")
    # A new row in a later file must not be inserted either.
    lines = read_rows(data_dir / "invoice_lines.csv")
    write_rows(data_dir / "invoice_lines.csv", [*lines, {**lines[0], "line_id": "LINE-NEW"}])
    with pytest.raises(CsvLoadError) as info:
        load_directory(sessions, data_dir)
    assert (info.value.file, info.value.row, info.value.column) == ("invoices.csv", 2, "total")
    assert "already exists with a different value" in str(info.value)
    assert counts(sessions) == before
    with sessions() as session:
        invoice = session.get(Invoice, read_rows(data_dir / "invoices.csv")[0]["invoice_id"])
    assert invoice is not None and invoice.total != Decimal("1.00")


# --- money consistency across files and with the rows already stored ---------------------


def assert_refused(
    sessions: sessionmaker[Session], data_dir: Path, where: tuple[str, int, str], words: str
) -> None:
    """Loading ``data_dir`` fails at ``where`` (file, row, column) and changes nothing."""
    before = counts(sessions)
    with pytest.raises(CsvLoadError) as info:
        load_directory(sessions, data_dir)
    err = info.value
    assert (err.file, err.row, err.column) == where
    file, row, column = where
    message = str(err)
    assert f"{file}, row {row}, column {column!r}" in message and words in message, message
    assert counts(sessions) == before


def refunded_payment(data_dir: Path) -> tuple[dict[str, str], Decimal]:
    """The sample's partly refunded payment and the amount of it not refunded yet."""
    refund = read_rows(data_dir / "refunds.csv")[0]
    payment = next(row for row in read_rows(data_dir / "payments.csv")
                   if row["payment_id"] == refund["payment_id"])
    return payment, Decimal(payment["amount"]) - Decimal(refund["amount"])


def new_refund(payment_id: str, amount: Decimal, number: int) -> dict[str, str]:
    return {"refund_id": f"RE-9{number:05d}", "payment_id": payment_id, "amount": str(amount),
            "currency": "USD", "refunded_at": "2026-04-01T09:00:00Z", "idempotency_key": ""}


def test_payment_of_another_customers_invoice_is_refused(
    sessions: sessionmaker[Session], data_dir: Path
) -> None:
    assert read_rows(data_dir / "payments.csv")[0]["invoice_id"] == "INV-000001"  # CUST-001's
    edit_cell(data_dir, "payments.csv", 2, "customer_id", "CUST-002")
    assert_refused(sessions, data_dir, ("payments.csv", 2, "customer_id"),
                   "does not match invoice 'INV-000001', whose customer_id is 'CUST-001'")


def test_payment_in_another_currency_than_its_invoice_is_refused(
    sessions: sessionmaker[Session], data_dir: Path
) -> None:
    edit_cell(data_dir, "payments.csv", 3, "currency", "eur")
    assert_refused(sessions, data_dir, ("payments.csv", 3, "currency"),
                   "'EUR' does not match invoice 'INV-000002', whose currency is 'USD'")


def test_charge_ref_shared_by_two_payments_is_refused(
    sessions: sessionmaker[Session], data_dir: Path
) -> None:
    first = read_rows(data_dir / "payments.csv")[0]
    edit_cell(data_dir, "payments.csv", 4, "charge_ref", first["charge_ref"])
    assert_refused(sessions, data_dir, ("payments.csv", 4, "charge_ref"),
                   f"{first['charge_ref']!r} is also used by {first['payment_id']!r}")


def test_payments_without_charge_ref_are_accepted(
    sessions: sessionmaker[Session], data_dir: Path
) -> None:
    edit_cell(data_dir, "payments.csv", 2, "charge_ref", "")
    edit_cell(data_dir, "payments.csv", 3, "charge_ref", "")
    load_directory(sessions, data_dir)
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Payment.charge_ref.is_(None))) == 2


def test_refunds_beyond_their_payment_are_refused(
    sessions: sessionmaker[Session], data_dir: Path
) -> None:
    payment, left = refunded_payment(data_dir)
    rows = read_rows(data_dir / "refunds.csv")
    # The first new refund takes exactly what is left; the second, one cent, is one too many.
    extra = [new_refund(payment["payment_id"], left, 1),
             new_refund(payment["payment_id"], Decimal("0.01"), 2)]
    write_rows(data_dir / "refunds.csv", [*rows, *extra])
    assert_refused(sessions, data_dir, ("refunds.csv", len(rows) + 3, "amount"),
                   f"more than the payment's amount {payment['amount']}")


def test_refunds_up_to_their_payment_are_accepted(
    sessions: sessionmaker[Session], data_dir: Path
) -> None:
    payment, left = refunded_payment(data_dir)
    rows = read_rows(data_dir / "refunds.csv")
    write_rows(data_dir / "refunds.csv", [*rows, new_refund(payment["payment_id"], left, 1)])
    report = load_directory(sessions, data_dir)
    assert report.inserted["refunds"] == len(rows) + 1


def test_refund_in_another_currency_than_its_payment_is_refused(
    sessions: sessionmaker[Session], data_dir: Path
) -> None:
    edit_cell(data_dir, "refunds.csv", 2, "currency", "EUR")
    assert_refused(sessions, data_dir, ("refunds.csv", 2, "currency"),
                   "whose currency is 'USD'")


def test_credit_in_another_currency_than_its_invoice_is_refused(
    sessions: sessionmaker[Session], data_dir: Path
) -> None:
    assert read_rows(data_dir / "credits.csv")[0]["currency"] == "EUR"
    edit_cell(data_dir, "credits.csv", 2, "currency", "USD")
    assert_refused(sessions, data_dir, ("credits.csv", 2, "currency"),
                   "whose currency is 'EUR' (in invoices.csv)")


def test_credit_of_another_customers_invoice_is_refused(
    sessions: sessionmaker[Session], data_dir: Path
) -> None:
    edit_cell(data_dir, "credits.csv", 3, "customer_id", "CUST-001")
    assert_refused(sessions, data_dir, ("credits.csv", 3, "customer_id"),
                   "'CUST-001' does not match invoice")


@pytest.mark.parametrize(("file", "column", "value"), [
    ("payments.csv", "customer_id", "CUST-002"),
    ("payments.csv", "currency", "EUR"),
    ("credits.csv", "customer_id", "CUST-002"),
    ("credits.csv", "currency", "EUR"),
])
def test_row_contradicting_a_stored_invoice_is_refused(
    sessions: sessionmaker[Session], data_dir: Path, tmp_path: Path,
    file: str, column: str, value: str,
) -> None:
    load_directory(sessions, data_dir)
    row = {"customer_id": "CUST-001", "invoice_id": "INV-000001", "amount": "5.00",
           "currency": "USD", column: value}
    if file == "payments.csv":
        row |= {"payment_id": "PAY-900001", "paid_at": "2026-04-01T09:00:00Z", "charge_ref": ""}
    else:
        row |= {"credit_id": "CN-900001", "issued_at": "2026-04-01"}
    extra = second_load(data_dir, tmp_path, {file: [row]})
    assert_refused(sessions, extra, (file, 2, column), "(in the database)")


def test_charge_ref_of_a_stored_payment_is_refused(
    sessions: sessionmaker[Session], data_dir: Path, tmp_path: Path
) -> None:
    load_directory(sessions, data_dir)
    stored = read_rows(data_dir / "payments.csv")[1]
    payment = {**stored, "payment_id": "PAY-900001"}
    extra = second_load(data_dir, tmp_path, {"payments.csv": [payment]})
    assert_refused(sessions, extra, ("payments.csv", 2, "charge_ref"),
                   f"{stored['charge_ref']!r} already belongs to {stored['payment_id']!r} in "
                   "the database")


@pytest.mark.parametrize("reloaded", [False, True], ids=["new rows only", "stored row reloaded"])
def test_refunds_beyond_a_stored_payment_are_refused(
    sessions: sessionmaker[Session], data_dir: Path, tmp_path: Path, reloaded: bool
) -> None:
    load_directory(sessions, data_dir)
    payment, left = refunded_payment(data_dir)
    stored = read_rows(data_dir / "refunds.csv")[:1] if reloaded else []
    rows = [*stored, new_refund(payment["payment_id"], left + Decimal("0.01"), 1)]
    extra = second_load(data_dir, tmp_path, {"refunds.csv": rows})  # the payment is stored
    assert_refused(sessions, extra, ("refunds.csv", len(rows) + 1, "amount"),
                   f"more than the payment's amount {payment['amount']} (in the database)")


def test_refunds_up_to_a_stored_payment_are_accepted_when_reloaded(
    sessions: sessionmaker[Session], data_dir: Path, tmp_path: Path
) -> None:
    load_directory(sessions, data_dir)
    payment, left = refunded_payment(data_dir)
    # The stored refund comes again with the new one: it must not be counted twice.
    rows = [*read_rows(data_dir / "refunds.csv"), new_refund(payment["payment_id"], left, 1)]
    extra = second_load(data_dir, tmp_path, {"payments.csv": [payment], "refunds.csv": rows})
    report = load_directory(sessions, extra)
    assert (report.inserted["refunds"], report.already_present["refunds"]) == (1, len(rows) - 1)
