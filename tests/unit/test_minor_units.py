"""Amounts become Stripe's minor units per its currency table: one test per class of currency."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing_recon.domain.money import from_minor_units, to_minor_units
from billing_recon.errors import UnknownCurrency


def test_two_decimal_currencies_are_sent_in_hundredths() -> None:
    assert to_minor_units(Decimal("12.34"), "USD") == 1234
    assert to_minor_units(Decimal("0.05"), "eur") == 5
    assert from_minor_units(1234, "usd") == Decimal("12.34")


def test_zero_decimal_currencies_are_sent_as_they_are() -> None:
    assert to_minor_units(Decimal("500"), "JPY") == 500
    assert to_minor_units(Decimal("12000.00"), "krw") == 12000
    assert from_minor_units(500, "jpy") == Decimal("500")


def test_a_fraction_of_a_zero_decimal_unit_is_refused_not_rounded() -> None:
    with pytest.raises(ValueError, match="more than 0 decimal places for JPY"):
        to_minor_units(Decimal("500.50"), "JPY")


def test_three_decimal_currencies_are_thousandths_ending_in_zero() -> None:
    assert to_minor_units(Decimal("5.12"), "KWD") == 5120
    assert to_minor_units(Decimal("5.124"), "bhd") == 5120  # Stripe: round to the nearest ten
    assert to_minor_units(Decimal("5.125"), "OMR") == 5130  # half up, as everywhere else
    assert from_minor_units(5120, "kwd") == Decimal("5.120")
    with pytest.raises(ValueError, match="more than three decimal places"):
        to_minor_units(Decimal("5.1234"), "TND")


def test_isk_is_two_decimal_but_whole_kronur_only() -> None:
    assert to_minor_units(Decimal("5"), "ISK") == 500
    with pytest.raises(ValueError, match="whole units"):
        to_minor_units(Decimal("5.50"), "ISK")


def test_a_currency_missing_from_the_table_is_refused() -> None:
    with pytest.raises(UnknownCurrency, match="unknown currency 'XYZ'"):
        to_minor_units(Decimal("1.00"), "XYZ")
    with pytest.raises(UnknownCurrency):
        from_minor_units(100, "zzz")
