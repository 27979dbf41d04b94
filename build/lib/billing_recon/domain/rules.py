"""The trusted reconciliation rules of SPEC §4: exact, vectorised, self-contained.

It imports nothing from ``billing_recon`` (only the standard library, numpy and pandas), so it
can also run on its own, e.g. inside a sandbox, as a script::

    python rules.py [DATA_DIR]    # prints one JSON document: summarize(reconcile(...))

Money never touches a float. Decimal strings are parsed straight into scaled int64 (amounts in
cents, quantity and unit price in 1e-4, tax rate in 1e-6) and every product is rounded back to
cents with ROUND_HALF_UP (away from zero at .5) in exact integer arithmetic. No Python loop runs
per line: each rule is a numpy/pandas operation over whole columns.

Decisions where SPEC §4 is silent:
- ``price_overcharge`` compares against the expected line amount before rule 3 zeroes it, so a
  cancelled subscription alone reports ``post_cancellation`` only.
- Money columns accept extra decimal places only when they are zeros (``12.5000`` is 12.50, the
  database's Numeric(18, 4) form); any other excess place is a ValueError. Whitespace, exponents
  and thousands separators are malformed.
- Lines, payments and credits of invoices not in ``invoices`` are ignored, and so are refunds of
  payments not in ``payments``. Amounts are summed whatever their currency column says.
- An invoice whose customer is missing, or a repeated invoice, customer, subscription or payment
  id, is a ValueError. An empty tax_exempt means false; an empty valid_from never matches.
- ``summarize`` lists every currency that has an invoice in ``totals``, with "0.00" if nothing
  is refundable in it.
- As a script, DATA_DIR defaults to the working directory (where the sandbox puts the files).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
DayArray = npt.NDArray[np.datetime64]

#: The SPEC §3 tables (file name without ``.csv``) and the columns the rules read from each.
TABLES: Final[dict[str, tuple[str, ...]]] = {
    "customers": ("customer_id", "tax_rate", "tax_exempt"),
    "price_agreements": ("customer_id", "sku", "unit_price", "valid_from", "valid_to"),
    "subscriptions": ("subscription_id", "cancelled_at"),
    "invoices": (
        "invoice_id", "customer_id", "subscription_id", "issued_at", "period_start",
        "currency", "subtotal", "tax", "total",
    ),
    "invoice_lines": ("invoice_id", "sku", "quantity", "unit_price", "amount"),
    "payments": ("payment_id", "invoice_id", "amount"),
    "refunds": ("payment_id", "amount"),
    "credits": ("invoice_id", "amount"),
}
REQUIRED_FILES: Final = ("customers", "invoices")

#: The reason codes of SPEC §4 rule 8, declared once (every other layer uses this type).
ReasonCode = Literal[
    "credit_not_applied", "duplicate_payment", "post_cancellation", "price_overcharge",
    "tax_error",
]
#: Reason codes in sorted order; bit i of a reason mask is REASONS[i].
REASONS: Final[tuple[str, ...]] = get_args(ReasonCode)
RESULT_COLUMNS: Final = (
    "invoice_id", "customer_id", "currency", "expected_subtotal", "expected_tax",
    "expected_total", "net_paid", "refundable", "reasons",
)

MONEY_PLACES: Final = 2
UNIT_PLACES: Final = 4  # quantity and unit price
RATE_PLACES: Final = 6
_MAX_DIGITS: Final = 18
_INT64_MAX: Final = int(np.iinfo(np.int64).max)
_NO_PRICE: Final = _INT64_MAX
_POW10: Final = 10 ** np.arange(19, dtype=np.int64)
_BOOLEANS: Final = {"true": True, "1": True, "false": False, "0": False, "": False}
_BILLED: Final = ("subtotal", "tax", "total")
_PLUS, _MINUS, _DOT, _ZERO, _PAD, _COMMA = (np.uint8(ord(c)) for c in "+-.0\0,")


# ---------------------------------------------------------------- input normalisation


def _table(tables: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame:
    """The named table reduced to the columns the rules read (a missing table has no rows).

    Nulls are left as they are (normalising a million-row column costs more than the rules);
    each reader treats None, NaN and "" alike.
    """
    columns = list(TABLES[name])
    frame = tables.get(name)
    if frame is None or len(frame) == 0:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")
    return frame[columns].reset_index(drop=True)


def _present(values: pd.Series) -> pd.Series:
    """Which cells hold a value (not None, NaN or "")."""
    return values.notna() & (values != "")


def _unique_index(frame: pd.DataFrame, table: str, column: str) -> pd.Index:
    """An index over a key column that must not repeat (it is the table's primary key)."""
    index = pd.Index(frame[column])
    if not index.is_unique:
        repeated = index[index.duplicated()][0]
        raise ValueError(f"{table}.{column}: duplicate key {repeated!r}")
    return index


# ---------------------------------------------------------------- exact number parsing


def _scan(matrix: npt.NDArray[np.uint8], places: int) -> dict[str, Any]:
    """Read NUL-padded ASCII rows of ``[+-]digits[.digits]`` with Horner's rule.

    The loop runs over character positions (a dozen at most), each step vectorised over all
    rows; only two in-place int64 operations per position, the rest is on bytes and booleans.
    Returns the digits read, how many of them are fraction places, how many digits were read,
    and flags for malformed text and for non-zero digits beyond ``places``.
    """
    rows = matrix.shape[0]
    acc = np.zeros(rows, np.int64)
    frac, taken = np.zeros(rows, np.uint8), np.zeros(rows, np.uint8)
    seen_dot, ended, any_digit = (np.zeros(rows, bool) for _ in range(3))
    bad, excess = np.zeros(rows, bool), np.zeros(rows, bool)
    for j, byte in enumerate(np.ascontiguousarray(matrix.T)):  # contiguous: no strided reads
        digit = byte - _ZERO  # uint8 wrap-around sends every non-digit above 9
        is_digit, is_dot, is_pad = digit < 10, byte == _DOT, byte == _PAD
        other = ~(is_digit | is_dot | is_pad)
        if j == 0:
            other &= (byte != _PLUS) & (byte != _MINUS)
        bad |= other | (is_dot & seen_dot) | (ended & ~is_pad)
        take = is_digit & (~seen_dot | (frac < places))
        excess |= is_digit & ~take & (digit != 0)
        np.multiply(acc, 10, out=acc, where=take)
        np.add(acc, digit, out=acc, where=take)
        frac += take & seen_dot
        taken = np.minimum(taken + take, 100)  # saturate: uint8 must not wrap back to "small"
        seen_dot |= is_dot
        ended |= is_pad
        any_digit |= is_digit
    return {"acc": acc, "frac": frac, "taken": taken, "bad": bad | ~any_digit, "excess": excess}


def _fast_scaled(values: list[Any], places: int) -> IntArray | None:
    """The canonical form ``[-]digits[.digits]`` (at most ``places`` decimals, 18 digits once
    scaled) parsed exactly from one joined buffer; None when any cell is outside that form.

    This is the common case (the CSV form the store writes), read without building a padded
    byte matrix: the cells are joined with commas, every byte is checked at once, each cell's
    decimal point is found at one of the ``places + 1`` positions it may take, and numpy's
    integer text reader converts the digits with the points removed. Anything else (empty or
    null cells, '+', whitespace, excess places, a stray comma or point) returns None, and
    the general parser then accepts it or names the offending row.
    """
    count = len(values)
    try:
        data = ",".join(values).encode("ascii")
    except (TypeError, UnicodeEncodeError):  # a null cell (not a str) or non-ASCII text
        return None
    buf = np.frombuffer(data, np.uint8)
    if buf.size == 0:
        return None
    is_comma = buf == _COMMA
    commas, dots, minuses = (int(np.count_nonzero(x))
                             for x in (is_comma, buf == _DOT, buf == _MINUS))
    digits_seen = int(np.count_nonzero((buf - _ZERO) < 10))  # uint8 wrap: non-digits above 9
    if digits_seen + commas + dots + minuses != buf.size:
        return None  # a byte that is not a digit, comma, point or minus
    if commas != count - 1:
        return None  # a comma inside a cell
    ends = np.append(np.flatnonzero(is_comma), buf.size)  # one past each cell's end
    starts = np.empty(count, np.int64)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    lengths = ends - starts
    if (lengths == 0).any():
        return None  # an empty cell
    negative = buf[np.minimum(starts, buf.size - 1)] == _MINUS
    if minuses != int(negative.sum()):
        return None  # a minus sign that does not lead its cell
    decimals, found = np.zeros(count, np.int64), np.zeros(count, np.int64)
    for d in range(places + 1):
        here = buf[np.maximum(ends - d - 1, 0)] == _DOT
        here &= lengths > d
        decimals[here] = d
        found += here
    if int(found.sum()) != dots or (found > 1).any():
        return None  # a point too far left (excess places) or two points in one cell
    digits = lengths - found - negative
    if (digits == 0).any() or (digits + places - decimals > _MAX_DIGITS).any():
        return None
    parsed = np.fromstring(data.replace(b".", b"").decode(), dtype=np.int64, sep=",")
    if parsed.size != count:
        return None
    scaled: IntArray = parsed * _POW10[places - decimals]
    return scaled


def _scaled(frame: pd.DataFrame, table: str, column: str, places: int) -> IntArray:
    """Parse a column of decimal strings exactly into int64 units of 10**-places.

    Raises ValueError naming table, column and data row (1 = first row after the header) for
    an empty cell, malformed text, more significant decimal places than ``places``, or more
    than 18 digits once scaled.
    """
    raw = frame[column].to_numpy(dtype=object)
    if len(raw) == 0:
        return np.zeros(0, np.int64)
    fast = _fast_scaled(raw.tolist(), places)
    return fast if fast is not None else _general_scaled(raw, table, column, places)


def _general_scaled(
    raw: npt.NDArray[np.object_], table: str, column: str, places: int
) -> IntArray:
    """``_scaled`` for any input: a NUL-padded byte matrix read by ``_scan``."""
    try:
        data = raw.astype("S")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{table}.{column}: non-ASCII characters in a number") from exc
    matrix = data.view(np.uint8).reshape(len(data), data.dtype.itemsize)
    scan = _scan(matrix, places)
    missing_places = places - scan["frac"].astype(np.int64)
    # At most 18 digits once scaled keeps every value below 1e18, far from int64's limit.
    for flag, problem in (
        (scan["bad"], "not a decimal number"),
        (scan["excess"], f"more than {places} decimal places"),
        (scan["taken"] + missing_places > _MAX_DIGITS, "number out of range"),
    ):
        if flag.any():
            row = int(np.flatnonzero(flag)[0])
            shown = repr(raw[row]) if isinstance(raw[row], str) and raw[row] else "empty cell"
            raise ValueError(f"{table}.{column}: {problem}: {shown} (row {row + 1})")
    value: IntArray = scan["acc"] * _POW10[missing_places]
    return np.where(matrix[:, 0] == _MINUS, -value, value)


def _utc_days(frame: pd.DataFrame, table: str, column: str) -> DayArray:
    """The UTC calendar date of each ISO 8601 date or timestamp; NaT for an empty cell.

    A bare date is that date; a timestamp without a zone is taken as UTC.
    """
    values = frame[column]
    stamps = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    bad = (stamps.isna() & _present(values)).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        shown = values.iloc[row]
        raise ValueError(f"{table}.{column}: bad date or timestamp: {shown!r} (row {row + 1})")
    days: DayArray = stamps.dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    return days


def _flags(frame: pd.DataFrame, table: str, column: str) -> BoolArray:
    """Parse true/false (also 1/0; empty = false), case-insensitively."""
    text = frame[column].fillna("").astype(str).str.strip().str.lower()
    unknown = ~text.isin(list(_BOOLEANS))
    if unknown.any():
        raise ValueError(f"{table}.{column}: not true/false: {text[unknown].iloc[0]!r}")
    flags: BoolArray = text.map(_BOOLEANS).to_numpy(dtype=bool)
    return flags


# ---------------------------------------------------------------- exact integer arithmetic


def _mul_round(x: IntArray, y: IntArray, divisor: int, what: str) -> IntArray:
    """ROUND_HALF_UP(x * y / divisor) exactly, rounding .5 away from zero like Decimal.

    ``x`` is split as high * divisor + low so no intermediate product can exceed int64.
    """
    negative = (x < 0) != (y < 0)
    ax, ay = np.abs(x), np.abs(y)
    high, low = np.divmod(ax, divisor)
    if np.any(ay > _INT64_MAX // divisor) or np.any(high + 1 > _INT64_MAX // np.maximum(ay, 1)):
        raise ValueError(f"{what}: amount out of range")
    magnitude = high * ay + (low * ay + divisor // 2) // divisor
    result: IntArray = np.where(negative, -magnitude, magnitude)
    return result


def _group_sum(groups: npt.NDArray[np.intp], values: IntArray, size: int, what: str) -> IntArray:
    """Exact per-group int64 sums (no float weights), refusing sums that could wrap."""
    # Bounding the sum of magnitudes bounds every group's sum; the float is only a guard.
    if float(np.abs(values).sum(dtype=np.float64)) >= _INT64_MAX / 2:
        raise ValueError(f"{what}: sum out of range")
    sums = np.zeros(size, np.int64)
    np.add.at(sums, groups, values)
    return sums


def _count(groups: npt.NDArray[np.intp], size: int) -> IntArray:
    """How many rows fall in each group."""
    counts: IntArray = np.bincount(groups, minlength=size).astype(np.int64)
    return counts


def _positions(keys: pd.Series, index: pd.Index) -> npt.NDArray[np.intp]:
    """Row position of each key in ``index``; -1 when absent."""
    found: npt.NDArray[np.intp] = index.get_indexer(keys)
    return found


# ---------------------------------------------------------------- the rules


def _customer_terms(
    tables: dict[str, pd.DataFrame], invoices: pd.DataFrame
) -> tuple[IntArray, BoolArray]:
    """Each invoice's customer tax rate (1e-6 units) and tax exemption."""
    customers = tables["customers"]
    index = _unique_index(customers, "customers", "customer_id")
    where = _positions(invoices["customer_id"], index)
    if (where < 0).any():
        unknown = invoices["customer_id"].iloc[int(np.flatnonzero(where < 0)[0])]
        raise ValueError(f"invoices.customer_id: unknown customer {unknown!r}")
    rate = _scaled(customers, "customers", "tax_rate", RATE_PLACES)[where]
    return rate, _flags(customers, "customers", "tax_exempt")[where]


def _post_cancellation(tables: dict[str, pd.DataFrame], invoices: pd.DataFrame) -> BoolArray:
    """Rule 3: the invoice's subscription was cancelled on or before its period_start (UTC)."""
    subs = tables["subscriptions"]
    subs = subs[_present(subs["subscription_id"])]
    where = _positions(
        invoices["subscription_id"], _unique_index(subs, "subscriptions", "subscription_id")
    )
    cancelled = np.append(_utc_days(subs, "subscriptions", "cancelled_at"), np.datetime64("NaT"))
    # Position -1 picks the appended NaT, and NaT compares False: no subscription, no rule 3.
    cancel_day = cancelled[where]
    result: BoolArray = cancel_day <= _utc_days(invoices, "invoices", "period_start")
    return result


def _agreed_prices(
    tables: dict[str, pd.DataFrame],
    invoice_customer: pd.Series,
    where: npt.NDArray[np.intp],
    skus: pd.Series,
    days: DayArray,
) -> IntArray:
    """Rule 1: the lowest agreed unit price valid on each line's issue date, else _NO_PRICE.

    ``where`` is each line's invoice position; ``days`` each line's issue date.
    """
    best = np.full(len(skus), _NO_PRICE, np.int64)
    agreements = tables["price_agreements"]
    agreements = agreements[_present(agreements["customer_id"]) & _present(agreements["sku"])]
    if agreements.empty or best.size == 0:
        return best
    # Hash the many line keys against the few agreement keys once, then join on small ints.
    customers = pd.Index(agreements["customer_id"].unique())
    products = pd.Index(agreements["sku"].unique())
    customer_code = _positions(invoice_customer, customers)[where]
    sku_code = _positions(skus, products)
    line_key = customer_code * len(products) + sku_code
    line_key[(customer_code < 0) | (sku_code < 0)] = -1
    agreement_key = _positions(agreements["customer_id"], customers) * len(products)
    agreement_key += _positions(agreements["sku"], products)
    terms = pd.DataFrame({
        "key": agreement_key,
        "price": _scaled(agreements, "price_agreements", "unit_price", UNIT_PLACES),
        "start": _utc_days(agreements, "price_agreements", "valid_from"),
        "end": _utc_days(agreements, "price_agreements", "valid_to"),
    })
    lines = np.flatnonzero(line_key >= 0)
    pairs = pd.DataFrame({"line": lines, "key": line_key[lines]}).merge(terms, on="key")
    day = days[pairs["line"].to_numpy()]
    start, end = pairs["start"].to_numpy(), pairs["end"].to_numpy()
    valid = (start <= day) & (np.isnat(end) | (day <= end))
    np.minimum.at(best, pairs["line"].to_numpy()[valid], pairs["price"].to_numpy()[valid])
    return best


def _line_totals(
    tables: dict[str, pd.DataFrame],
    invoices: pd.DataFrame,
    index: pd.Index,
    post_cancel: BoolArray,
) -> tuple[IntArray, BoolArray]:
    """Rules 1-4 per line: each invoice's expected subtotal and whether a line was lowered."""
    lines = tables["invoice_lines"]
    where = _positions(lines["invoice_id"], index)
    if (where < 0).any():  # lines of invoices out of scope are not ours to judge
        lines, where = lines[where >= 0], where[where >= 0]
    issued = _utc_days(invoices, "invoices", "issued_at")
    quantity = _scaled(lines, "invoice_lines", "quantity", UNIT_PLACES)
    billed_price = _scaled(lines, "invoice_lines", "unit_price", UNIT_PLACES)
    billed_amount = _scaled(lines, "invoice_lines", "amount", MONEY_PLACES)
    agreed = _agreed_prices(tables, invoices["customer_id"], where, lines["sku"], issued[where])
    price = np.minimum(billed_price, agreed)
    # quantity and price are both in 1e-4 units, so their product is in 1e-8: 1e6 per cent.
    amount = _mul_round(quantity, price, 10**6, "invoice_lines.amount")
    lowered = (amount < billed_amount) | (price < billed_price)
    owed = np.where(post_cancel[where], 0, amount)
    size = len(index)
    subtotal = _group_sum(where, owed, size, "expected subtotal")
    return subtotal, _count(where[lowered], size) > 0


def _sum_per_invoice(
    frame: pd.DataFrame, table: str, where: npt.NDArray[np.intp], size: int
) -> tuple[IntArray, IntArray]:
    """Sum (cents) and count of a table's amounts per invoice position (-1 = out of scope)."""
    keep = where >= 0
    amounts = _scaled(frame[keep], table, "amount", MONEY_PLACES)
    return _group_sum(where[keep], amounts, size, table), _count(where[keep], size)


def _money_flows(
    tables: dict[str, pd.DataFrame], index: pd.Index
) -> dict[str, IntArray]:
    """Rules 5-6 inputs per invoice: credits, payments and refunds against those payments."""
    size = len(index)
    credits, credit_count = _sum_per_invoice(
        tables["credits"], "credits", _positions(tables["credits"]["invoice_id"], index), size
    )
    payments = tables["payments"]
    paid_to = _positions(payments["invoice_id"], index)
    paid, payment_count = _sum_per_invoice(payments, "payments", paid_to, size)
    payment_index = _unique_index(payments, "payments", "payment_id")
    refunded_payment = _positions(tables["refunds"]["payment_id"], payment_index)
    # Position -1 picks the appended -1: a refund of an unknown payment belongs to no invoice.
    refunded_to = np.append(paid_to, -1)[refunded_payment]
    refunded, _ = _sum_per_invoice(tables["refunds"], "refunds", refunded_to, size)
    return {
        "credits": credits, "credit_count": credit_count, "paid": paid,
        "payment_count": payment_count, "refunded": refunded,
    }


def _reason_masks(
    refundable: IntArray, billed: dict[str, IntArray], flows: dict[str, IntArray],
    flags: dict[str, BoolArray],
) -> IntArray:
    """Rule 8 as a bit mask per invoice (bit i = REASONS[i]); 0 when nothing is refundable."""
    credited_total = np.maximum(0, billed["subtotal"] + billed["tax"] - flows["credits"])
    found = {
        "credit_not_applied": (flows["credit_count"] > 0) & (billed["total"] > credited_total),
        "duplicate_payment": (flows["payment_count"] > 1) & (flows["paid"] > billed["total"]),
        "post_cancellation": flags["post_cancellation"],
        "price_overcharge": flags["price_overcharge"],
        "tax_error": billed["tax"] != billed["correct_tax"],
    }
    mask = np.zeros(len(refundable), np.int64)
    for bit, code in enumerate(REASONS):
        mask |= found[code].astype(np.int64) << bit
    return np.where(refundable > 0, mask, 0)


def _money_text(cents: IntArray) -> npt.NDArray[np.object_]:
    """Two-place decimal strings ("-1.05", "12.30") from integer cents, vectorised.

    The digits are written into a byte matrix, one row per value, and read back as strings
    in one conversion (NUL padding at the end of a row is dropped by numpy).
    """
    count = len(cents)
    if count == 0:
        return np.zeros(0, dtype=object)
    negative = cents < 0
    magnitude = np.abs(cents)
    whole = magnitude // 100
    width = np.searchsorted(_POW10[1:], whole, side="right") + 1  # digits before the point
    point = negative + width
    rows = np.arange(count)
    matrix = np.zeros((count, int(point.max()) + 3), np.uint8)
    rest = whole.copy()
    for k in range(int(width.max())):  # k-th digit left of the point, for values that have it
        has = width > k
        matrix[rows[has], point[has] - 1 - k] = _ZERO + rest[has] % 10
        rest //= 10
    matrix[rows, point] = _DOT
    matrix[rows, point + 1] = _ZERO + magnitude % 100 // 10
    matrix[rows, point + 2] = _ZERO + magnitude % 10
    matrix[negative, 0] = _MINUS
    text = matrix.view(f"S{matrix.shape[1]}").ravel()
    return text.astype(str).astype(object)


def _reason_lists(masks: IntArray) -> list[list[str]]:
    """Sorted reason code lists; one fresh list per invoice so no two rows share a list."""
    table = [[code for bit, code in enumerate(REASONS) if m >> bit & 1] for m in range(32)]
    # Output materialisation: one list object per invoice (never per line) is unavoidable.
    return [list(table[m]) for m in masks.tolist()]


def reconcile(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Apply SPEC §4 to every row of ``tables["invoices"]``; one result row per invoice.

    ``tables`` maps SPEC §3 table names (no ``.csv``) to DataFrames of strings as in the CSV;
    a missing name is an empty table. Returns columns RESULT_COLUMNS sorted by invoice_id,
    money as two-place strings and ``reasons`` as a sorted list of codes. Raises ValueError
    for malformed numbers or dates, duplicate keys, missing columns or unknown customers.
    """
    t = {name: _table(tables, name) for name in TABLES}
    invoices = t["invoices"]
    index = _unique_index(invoices, "invoices", "invoice_id")
    rate, exempt = _customer_terms(t, invoices)
    post_cancel = _post_cancellation(t, invoices)
    subtotal, lowered = _line_totals(t, invoices, index, post_cancel)
    billed = {c: _scaled(invoices, "invoices", c, MONEY_PLACES) for c in _BILLED}
    billed["correct_tax"] = np.where(
        exempt, 0, _mul_round(billed["subtotal"], rate, 10**6, "invoices.tax")
    )
    tax = np.where(exempt, 0, _mul_round(subtotal, rate, 10**6, "expected tax"))
    flows = _money_flows(t, index)
    total = np.maximum(0, subtotal + tax - flows["credits"])
    net_paid = flows["paid"] - flows["refunded"]
    refundable = np.maximum(0, net_paid - total)
    flags = {"post_cancellation": post_cancel, "price_overcharge": lowered}
    masks = _reason_masks(refundable, billed, flows, flags)
    result = pd.DataFrame({
        "invoice_id": invoices["invoice_id"], "customer_id": invoices["customer_id"],
        "currency": invoices["currency"].fillna(""), "expected_subtotal": _money_text(subtotal),
        "expected_tax": _money_text(tax), "expected_total": _money_text(total),
        "net_paid": _money_text(net_paid), "refundable": _money_text(refundable),
        "reasons": pd.Series(_reason_lists(masks), dtype=object),
    })
    return result.sort_values("invoice_id", kind="stable").reset_index(drop=True)


def summarize(result: pd.DataFrame) -> dict[str, Any]:
    """The JSON-ready summary of a ``reconcile`` result: per invoice, and totals per currency.

    ``totals`` holds every currency that has at least one invoice, "0.00" when nothing in it
    is refundable; the sum is exact (integer cents).
    """
    invoices = {
        row.invoice_id: {
            "currency": row.currency, "expected_total": row.expected_total,
            "net_paid": row.net_paid, "refundable": row.refundable, "reasons": list(row.reasons),
        }
        for row in result.itertuples(index=False)
    }
    cents = pd.Series(_scaled(result, "result", "refundable", MONEY_PLACES))
    per_currency = cents.groupby(result["currency"].to_numpy(), sort=True).sum()
    totals = dict(zip(per_currency.index, _money_text(per_currency.to_numpy()), strict=True))
    return {"invoices": invoices, "totals": totals}


def load_tables(data_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read the SPEC §3 CSV files of ``data_dir`` as strings; absent optional files are skipped.

    Raises FileNotFoundError when customers.csv or invoices.csv is missing.
    """
    folder = Path(data_dir)
    tables = {}
    for name in TABLES:
        path = folder / f"{name}.csv"
        if path.is_file():
            tables[name] = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        elif name in REQUIRED_FILES:
            raise FileNotFoundError(f"required file missing: {path}")
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    """Script entry point: ``rules.py [DATA_DIR]`` prints the summary as one JSON document.

    DATA_DIR defaults to the working directory, where the sandbox puts the CSV files.
    Returns 1 (message on stderr, nothing on stdout) for bad or missing data, 2 for bad usage.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1:
        print("usage: rules.py [DATA_DIR]", file=sys.stderr)
        return 2
    try:
        summary = summarize(reconcile(load_tables(args[0] if args else ".")))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
