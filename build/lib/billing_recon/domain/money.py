"""Decimal money helpers. Minor units appear only at the gateway boundary."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")


def to_decimal(value: object) -> Decimal:
    """Parse a money-like value (str, int, Decimal) exactly; floats are refused."""
    if isinstance(value, float):
        raise TypeError("money must not be a float")
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal number: {value!r}") from exc
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def round_cents(value: Decimal) -> Decimal:
    """Round to cents with ROUND_HALF_UP (SPEC §4)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def to_minor_units(value: Decimal) -> int:
    """Convert an amount with at most two places to integer cents."""
    cents = value * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"amount has more than two decimal places: {value}")
    return int(cents)


def from_minor_units(cents: int) -> Decimal:
    """Convert integer cents back to a two-place Decimal."""
    return (Decimal(cents) / 100).quantize(CENT)


def fmt(value: Decimal) -> str:
    """Canonical string of an amount: two places, no exponent."""
    return f"{round_cents(value):.2f}"


def parse_written_amount(text: str) -> Decimal | None:
    """An amount as people write it ("$1,234.50", "50,00 €", "5000"), or None.

    The last of ``.``/``,`` is the decimal separator when two digits or fewer follow it;
    every other separator groups thousands.
    """
    raw = text.strip().strip("$€£").strip()
    cut = max(raw.rfind("."), raw.rfind(","))
    if cut >= 0 and 0 < len(raw) - cut - 1 <= 2:
        raw = raw[:cut].replace(",", "").replace(".", "") + "." + raw[cut + 1:]
    else:
        raw = raw.replace(",", "").replace(".", "")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 else None
