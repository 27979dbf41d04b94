"""Decimal money helpers. Minor units appear only at the gateway boundary."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from billing_recon.domain.currency import WHOLE_UNITS_ONLY
from billing_recon.domain.currency import code as currency_code
from billing_recon.domain.currency import exponent as currency_exponent

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


def to_minor_units(value: Decimal, currency: str) -> int:
    """The API amount of ``value`` in ``currency``'s minor units (Stripe's table,
    domain/currency.py): x100, x1 for zero-decimal, x1000 rounded to the nearest ten
    (ROUND_HALF_UP) for three-decimal currencies.

    An amount finer than the currency allows is refused rather than rounded (half a yen, a
    tenth of a cent), and so is a currency the table does not know (``UnknownCurrency``).
    """
    places = currency_exponent(currency)
    units = value.scaleb(places)
    if places == 3:
        if units != units.to_integral_value():
            raise ValueError(f"amount has more than three decimal places: {value} {currency}")
        # Stripe requires the last digit of a three-decimal amount to be 0.
        return int((units / 10).to_integral_value(rounding=ROUND_HALF_UP)) * 10
    if units != units.to_integral_value():
        raise ValueError(f"amount has more than {places} decimal places for {currency}: {value}")
    if currency_code(currency) in WHOLE_UNITS_ONLY and units % 100:
        raise ValueError(f"{currency} amounts must be whole units at the gateway: {value}")
    return int(units)


def from_minor_units(units: int, currency: str) -> Decimal:
    """An API amount in ``currency``'s minor units as a Decimal with the currency's places
    (at least two, as amounts are written everywhere else)."""
    places = currency_exponent(currency)
    return Decimal(units).scaleb(-places).quantize(Decimal(1).scaleb(-max(places, 2)))


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
