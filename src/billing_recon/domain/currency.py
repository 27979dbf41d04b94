"""Stripe's currency table: how an amount in a currency becomes the API's integer minor units.

Stripe expects every ``amount`` in the currency's smallest unit (https://docs.stripe.com/currencies):

- two-decimal currencies (most: USD, EUR, GBP...) in hundredths: 10.00 USD is 1000;
- zero-decimal currencies (JPY, KRW, VND...) as they are: 500 JPY is 500;
- three-decimal currencies (BHD, JOD, KWD, OMR, TND) in thousandths, and the last digit must
  be 0 (Stripe: "round amounts to the nearest ten"): 5.124 KWD is sent as 5120;
- ISK is two-decimal in the API but only whole krónur are accepted (a multiple of 100).

A currency missing from the table is refused (``UnknownCurrency``): sending it with a guessed
exponent could refund a hundred times too much or too little.
"""

from __future__ import annotations

from typing import Final

from billing_recon.errors import UnknownCurrency

ZERO_DECIMAL: Final = frozenset({
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
})
THREE_DECIMAL: Final = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
#: Two-decimal in the API, but amounts must be whole units (a multiple of 100 minor units).
WHOLE_UNITS_ONLY: Final = frozenset({"ISK"})
TWO_DECIMAL: Final = frozenset({
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BMD", "BND", "BOB", "BRL", "BSD", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CNY",
    "COP", "CRC", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GIP", "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "ISK",
    "JMD", "KES", "KGS", "KHR", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD", "MDL",
    "MKD", "MMK", "MNT", "MOP", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO",
    "NOK", "NPR", "NZD", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB",
    "SAR", "SBD", "SCR", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "STD", "SZL", "THB", "TJS",
    "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "UYU", "UZS", "WST", "XCD", "YER", "ZAR",
    "ZMW",
})


def code(currency: str) -> str:
    """The currency's ISO code as the table spells it (upper case), or ``UnknownCurrency``."""
    upper = currency.strip().upper()
    if upper not in TWO_DECIMAL | ZERO_DECIMAL | THREE_DECIMAL:
        raise UnknownCurrency(currency)
    return upper


def exponent(currency: str) -> int:
    """Decimal places of the currency's API amounts: 0, 2 or 3."""
    upper = code(currency)
    if upper in ZERO_DECIMAL:
        return 0
    return 3 if upper in THREE_DECIMAL else 2
