"""The local gateway's HTTP API: Stripe's wire format for the refund subset.

Requests are form-encoded and authenticated with `Authorization: Bearer sk_...`; responses are
Stripe-shaped JSON objects and errors are `{"error": {"type", "code", "param", "message"}}`, so
the official `stripe` SDK raises its usual exception classes against it. `POST
/v1/test_helpers/charges` (seeding a charge) exists only here, not on Stripe.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing_recon.payments.gateway_store import (
    MAX_KEY_LENGTH,
    REFUND_REASONS,
    ApiError,
    GatewayStore,
    RefundParams,
    StoredResponse,
    request_fingerprint,
)

if TYPE_CHECKING:  # fault injection is a test double, not shipped
    from billing_recon.testing.gateway_faults import FaultPlan

_REFUND_FIELDS = frozenset({"charge", "payment_intent", "amount", "currency", "reason"})
_CHARGE_FIELDS = frozenset({"id", "amount", "currency", "amount_refunded"})
_LIST_FIELDS = frozenset({"charge", "payment_intent", "limit", "starting_after"})
_METADATA = re.compile(r"^metadata\[(.+)\]$")
_CURRENCY = re.compile(r"^[a-z]{3}$")


def create_app(
    store: GatewayStore, *, api_key: str | None = None, faults: FaultPlan | None = None
) -> FastAPI:
    """The gateway app on `store`. With `api_key`, only that secret key is accepted; without
    it, any `sk_...` key is (enough for a loopback test double). With `faults`, the fault
    plan's test helpers exist (wrap the app in `FaultInjector` to apply it)."""
    app = FastAPI(
        title="billing-recon local gateway", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.store, app.state.api_key = store, api_key
    app.add_exception_handler(ApiError, _api_error_response)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error_response)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error_response)
    app.include_router(_router)
    if faults is not None:
        from billing_recon.testing.gateway_faults import faults_router  # a test double

        app.state.faults = faults
        app.include_router(faults_router, dependencies=[Depends(_authorize)])
    app.add_api_route("/healthz", _healthz, methods=["GET"])
    return app


async def _healthz() -> dict[str, str]:
    return {"status": "ok"}


def _authorize(request: Request) -> None:
    """Stripe's bearer-token check; the error bodies mirror Stripe's."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.startswith("sk_"):
        raise ApiError(
            401,
            "invalid_request_error",
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY').",
        )
    expected: str | None = request.app.state.api_key
    if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
        raise ApiError(
            401, "invalid_request_error", f"Invalid API Key provided: {key[:8]}****{key[-4:]}"
        )


_router = APIRouter(prefix="/v1", dependencies=[Depends(_authorize)])


def _store(request: Request) -> GatewayStore:
    store: GatewayStore = request.app.state.store
    return store


@_router.post("/refunds")
async def create_refund(request: Request) -> JSONResponse:
    """Create a refund (`POST /v1/refunds`), honouring the `Idempotency-Key` header."""
    pairs = await _form(request)
    params = parse_refund_params(pairs)
    key = _idempotency_key(request)
    fingerprint = request_fingerprint("POST", request.url.path, pairs)
    response = await run_in_threadpool(
        _store(request).refund, params, idempotency_key=key, fingerprint=fingerprint
    )
    return _stored_response(response, key)


@_router.get("/refunds/{refund_id}")
async def retrieve_refund(refund_id: str, request: Request) -> dict[str, Any]:
    """Retrieve one refund."""
    refund = await run_in_threadpool(_store(request).get_refund, refund_id)
    if refund is None:
        raise _missing("refund", refund_id)
    return refund


@_router.get("/refunds")
async def list_refunds(request: Request) -> dict[str, Any]:
    """List refunds newest first, optionally of one charge or PaymentIntent."""
    query = _only(list(request.query_params.multi_items()), _LIST_FIELDS)
    source = query.get("charge") or query.get("payment_intent")
    items = await run_in_threadpool(_store(request).list_refunds, source)
    return _page(items, _limit(query.get("limit")), query.get("starting_after"))


@_router.post("/test_helpers/charges")
async def seed_charge(request: Request) -> dict[str, Any]:
    """Create a charge if it does not exist yet (local gateway only) and return it."""
    form = _only(await _form(request), _CHARGE_FIELDS)
    if not form.get("id"):
        raise _invalid("Missing required param: id.", code="parameter_missing", param="id")
    amount = _positive_int(form.get("amount"), "amount")
    refunded = _non_negative_int(form.get("amount_refunded", "0"), "amount_refunded")
    currency = str(_currency(form.get("currency", "")))  # "" is refused as invalid
    try:
        return await run_in_threadpool(
            _store(request).ensure_charge, form["id"], amount, currency, refunded
        )
    except ValueError as exc:
        raise _invalid(str(exc), param="amount_refunded") from exc


@_router.get("/charges/{charge_id}")
async def retrieve_charge(charge_id: str, request: Request) -> dict[str, Any]:
    """Retrieve one charge, with how much of it is refunded."""
    charge = await run_in_threadpool(_store(request).get_charge, charge_id)
    if charge is None:
        raise _missing("charge", charge_id)
    return charge


# -- request parsing ----------------------------------------------------------------------


def parse_refund_params(pairs: Sequence[tuple[str, str]]) -> RefundParams:
    """Validate the form fields of `POST /v1/refunds`; errors here are never stored."""
    fields: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for name, value in pairs:
        match = _METADATA.match(name)
        if match:
            metadata[match.group(1)] = value
        else:
            fields.update(_only([(name, value)], _REFUND_FIELDS))
    source_id, via_pi = _refund_source(fields)
    amount = fields.get("amount")
    return RefundParams(
        source_id=source_id,
        via_payment_intent=via_pi,
        amount=None if amount is None else _positive_int(amount, "amount"),
        currency=_currency(fields.get("currency")),
        reason=_reason(fields.get("reason")),
        metadata=metadata,
    )


async def _form(request: Request) -> list[tuple[str, str]]:
    # Parsed by hand: Starlette's form parser needs python-multipart even for urlencoded bodies.
    body = (await request.body()).decode("utf-8")
    return parse_qsl(body, keep_blank_values=True)


def _only(pairs: Sequence[tuple[str, str]], allowed: frozenset[str]) -> dict[str, str]:
    for name, _ in pairs:
        if name not in allowed:
            raise _invalid(
                f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
    return dict(pairs)


def _refund_source(fields: dict[str, str]) -> tuple[str, bool]:
    charge, intent = fields.get("charge"), fields.get("payment_intent")
    if charge and intent:
        raise _invalid("You can only specify one of charge or payment_intent.", param="charge")
    if not (charge or intent):
        raise _invalid(
            "One of the following params should be provided for this request: "
            "payment_intent or charge.",
            code="parameter_missing",
            param="charge",
        )
    return (intent, True) if intent else (str(charge), False)


def _positive_int(value: str | None, param: str) -> int:
    number = _non_negative_int(value, param)
    if number == 0:
        raise _invalid(
            "This value must be greater than or equal to 1.",
            code="parameter_invalid_integer",
            param=param,
        )
    return number


def _non_negative_int(value: str | None, param: str) -> int:
    if value is None or not value.isascii() or not value.isdigit():
        raise _invalid(f"Invalid integer: {value}", code="parameter_invalid_integer", param=param)
    return int(value)


def _currency(value: str | None) -> str | None:
    # Strict on purpose: Stripe documents currencies as lowercase ISO codes, and the local
    # gateway should catch a client that sends anything else.
    if value is None:
        return None
    if not _CURRENCY.match(value):
        raise _invalid(f"Invalid currency: {value}. Use a lowercase ISO code.", param="currency")
    return value


def _reason(value: str | None) -> str | None:
    if value is None or value in REFUND_REASONS:
        return value
    raise _invalid(
        "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
        param="reason",
    )


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise _invalid(f"Idempotency keys must be 1 to {MAX_KEY_LENGTH} characters long.")
    return key


def _limit(value: str | None) -> int:
    limit = 10 if value is None else _positive_int(value, "limit")
    if limit > 100:
        raise _invalid("This value must be less than or equal to 100.", param="limit")
    return limit


def _page(items: list[dict[str, Any]], limit: int, starting_after: str | None) -> dict[str, Any]:
    """One page of a Stripe list; `starting_after` is the last id of the previous page."""
    start = 0
    if starting_after is not None:
        ids = [item["id"] for item in items]
        if starting_after not in ids:
            raise _missing("refund", starting_after)
        start = ids.index(starting_after) + 1
    data = items[start : start + limit]
    return {
        "object": "list",
        "url": "/v1/refunds",
        "data": data,
        "has_more": start + limit < len(items),
    }


# -- responses ----------------------------------------------------------------------------


def _invalid(message: str, *, code: str | None = None, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request_error", message, code=code, param=param)


def _missing(kind: str, object_id: str) -> ApiError:
    return ApiError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param="id",
    )


def _stored_response(response: StoredResponse, key: str | None) -> JSONResponse:
    headers = {} if key is None else {"Idempotency-Key": key}
    if response.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(response.body, status_code=response.status, headers=headers)


async def _api_error_response(_request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = f"Unrecognized request URL ({request.method}: {request.url.path})."
    if exc.status_code != 404:
        message = str(exc.detail)
    body = {"error": {"type": "invalid_request_error", "message": message}}
    return JSONResponse(body, status_code=exc.status_code)


async def _internal_error_response(_request: Request, _exc: Exception) -> JSONResponse:
    # Nothing was committed (the store's transaction rolled back and freed the key): the
    # client may retry, as the Stripe SDK does on a 500.
    body = {"error": {"type": "api_error", "message": "An unexpected error occurred."}}
    return JSONResponse(body, status_code=500)
