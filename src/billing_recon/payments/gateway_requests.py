"""The local gateway's requests read as Stripe reads them: the form fields of `POST
/v1/refunds`, list and charge parameters, the Idempotency-Key header, list pages. A bad one is
an `ApiError` shaped like Stripe's (400 `invalid_request_error` naming the parameter, or 404
`resource_missing`), which the app turns into the response.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from billing_recon.domain.currency import exponent
from billing_recon.errors import UnknownCurrency
from billing_recon.payments.gateway_store import (
    MAX_KEY_LENGTH,
    REFUND_REASONS,
    ApiError,
    RefundParams,
)

REFUND_FIELDS = frozenset({"charge", "payment_intent", "amount", "currency", "reason"})
CHARGE_FIELDS = frozenset({"id", "amount", "currency", "amount_refunded"})
LIST_FIELDS = frozenset({"charge", "payment_intent", "limit", "starting_after"})
_METADATA = re.compile(r"^metadata\[(.+)\]$")
_CURRENCY = re.compile(r"^[a-z]{3}$")


def invalid(message: str, *, code: str | None = None, param: str | None = None) -> ApiError:
    """A 400 `invalid_request_error`, optionally naming the parameter and Stripe's code."""
    return ApiError(400, "invalid_request_error", message, code=code, param=param)


def missing(kind: str, object_id: str) -> ApiError:
    """A 404 `resource_missing` for the object of that kind and id."""
    return ApiError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param="id",
    )


def parse_refund_params(pairs: Sequence[tuple[str, str]]) -> RefundParams:
    """Validate the form fields of `POST /v1/refunds`; errors here are never stored."""
    fields: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for name, value in pairs:
        match = _METADATA.match(name)
        if match:
            metadata[match.group(1)] = value
        else:
            fields.update(only([(name, value)], REFUND_FIELDS))
    source_id, via_pi = _refund_source(fields)
    amount = None if fields.get("amount") is None else positive_int(fields["amount"], "amount")
    currency = currency_code(fields.get("currency"))
    if amount is not None and currency is not None and exponent(currency) == 3 and amount % 10:
        raise invalid("Amounts in three-decimal currencies must end in 0 (round to the nearest "
                      "ten).", code="invalid_amount", param="amount")
    return RefundParams(
        source_id=source_id,
        via_payment_intent=via_pi,
        amount=amount,
        currency=currency,
        reason=refund_reason(fields.get("reason")),
        metadata=metadata,
    )


async def form(request: Request) -> list[tuple[str, str]]:
    """The urlencoded body as (name, value) pairs, blanks kept."""
    # Parsed by hand: Starlette's form parser needs python-multipart even for urlencoded bodies.
    body = (await request.body()).decode("utf-8")
    return parse_qsl(body, keep_blank_values=True)


def only(pairs: Sequence[tuple[str, str]], allowed: frozenset[str]) -> dict[str, str]:
    """The pairs as a dict; an unknown parameter is refused as Stripe refuses it."""
    for name, _ in pairs:
        if name not in allowed:
            raise invalid(
                f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
    return dict(pairs)


def _refund_source(fields: dict[str, str]) -> tuple[str, bool]:
    charge, intent = fields.get("charge"), fields.get("payment_intent")
    if charge and intent:
        raise invalid("You can only specify one of charge or payment_intent.", param="charge")
    if not (charge or intent):
        raise invalid(
            "One of the following params should be provided for this request: "
            "payment_intent or charge.",
            code="parameter_missing",
            param="charge",
        )
    return (intent, True) if intent else (str(charge), False)


def positive_int(value: str | None, param: str) -> int:
    """A whole number of at least 1 (an amount, a limit)."""
    number = non_negative_int(value, param)
    if number == 0:
        raise invalid(
            "This value must be greater than or equal to 1.",
            code="parameter_invalid_integer",
            param=param,
        )
    return number


def non_negative_int(value: str | None, param: str) -> int:
    """A whole number of at least 0, written in ASCII digits only."""
    if value is None or not value.isascii() or not value.isdigit():
        raise invalid(f"Invalid integer: {value}", code="parameter_invalid_integer", param=param)
    return int(value)


def currency_code(value: str | None) -> str | None:
    """A lowercase three-letter ISO currency code, or None when not given."""
    # Strict on purpose: Stripe documents currencies as lowercase ISO codes, and the local
    # gateway should catch a client that sends anything else.
    if value is None:
        return None
    if not _CURRENCY.match(value):
        raise invalid(f"Invalid currency: {value}. Use a lowercase ISO code.", param="currency")
    try:
        exponent(value)
    except UnknownCurrency:
        raise invalid(f"Invalid currency: {value}. Stripe does not support it.",
                      param="currency") from None
    return value


def refund_reason(value: str | None) -> str | None:
    """One of Stripe's refund reasons, or None when not given."""
    if value is None or value in REFUND_REASONS:
        return value
    raise invalid(
        "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
        param="reason",
    )


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header, 1 to 255 characters, or None without one."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise invalid(f"Idempotency keys must be 1 to {MAX_KEY_LENGTH} characters long.")
    return key


def list_limit(value: str | None) -> int:
    """A list's `limit`: 10 by default, 1 to 100."""
    limit = 10 if value is None else positive_int(value, "limit")
    if limit > 100:
        raise invalid("This value must be less than or equal to 100.", param="limit")
    return limit


def page(items: list[dict[str, Any]], limit: int, starting_after: str | None) -> dict[str, Any]:
    """One page of a Stripe list; `starting_after` is the last id of the previous page."""
    start = 0
    if starting_after is not None:
        ids = [item["id"] for item in items]
        if starting_after not in ids:
            raise missing("refund", starting_after)
        start = ids.index(starting_after) + 1
    data = items[start : start + limit]
    return {
        "object": "list",
        "url": "/v1/refunds",
        "data": data,
        "has_more": start + limit < len(items),
    }
