"""The local gateway's HTTP API: Stripe's wire format for the refund subset.

Requests are form-encoded and authenticated with `Authorization: Bearer sk_...`; responses are
Stripe-shaped JSON objects and errors are `{"error": {"type", "code", "param", "message"}}`, so
the official `stripe` SDK raises its usual exception classes against it. `POST
/v1/test_helpers/charges` (seeding a charge) exists only here, not on Stripe.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing_recon.payments import gateway_requests as req
from billing_recon.payments.gateway_settlement import settle_due
from billing_recon.payments.gateway_store import (
    ApiError,
    GatewayStore,
    StoredResponse,
    request_fingerprint,
)

if TYPE_CHECKING:  # fault injection is a test double, not shipped
    from billing_recon.testing.gateway_faults import FaultPlan



def create_app(
    store: GatewayStore, *, api_key: str, faults: FaultPlan | None = None
) -> FastAPI:
    """The gateway app on `store`; only the secret key `api_key` is accepted (the local
    gateway moves money in its ledger: no caller gets in without its key). With `faults`, the
    fault plan's test helpers exist (wrap the app in `FaultInjector` to apply it)."""
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
    expected: str = request.app.state.api_key
    if not hmac.compare_digest(key.encode(), expected.encode()):
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
    pairs = await req.form(request)
    params = req.parse_refund_params(pairs)
    key = req.idempotency_key(request)
    fingerprint = request_fingerprint("POST", request.url.path, pairs)
    response = await run_in_threadpool(
        _store(request).refund, params, idempotency_key=key, fingerprint=fingerprint
    )
    return _stored_response(response, key)


@_router.get("/refunds/{refund_id}")
async def retrieve_refund(refund_id: str, request: Request) -> dict[str, Any]:
    """Retrieve one refund (as it is now: what is due settles first)."""
    await run_in_threadpool(settle_due, _store(request))
    refund = await run_in_threadpool(_store(request).get_refund, refund_id)
    if refund is None:
        raise req.missing("refund", refund_id)
    return refund


@_router.get("/refunds")
async def list_refunds(request: Request) -> dict[str, Any]:
    """List refunds newest first, optionally of one charge or PaymentIntent."""
    query = req.only(list(request.query_params.multi_items()), req.LIST_FIELDS)
    source = query.get("charge") or query.get("payment_intent")
    await run_in_threadpool(settle_due, _store(request))
    items = await run_in_threadpool(_store(request).list_refunds, source)
    return req.page(items, req.list_limit(query.get("limit")), query.get("starting_after"))


@_router.post("/test_helpers/charges")
async def seed_charge(request: Request) -> dict[str, Any]:
    """Create a charge if it does not exist yet (local gateway only) and return it."""
    form = req.only(await req.form(request), req.CHARGE_FIELDS)
    if not form.get("id"):
        raise req.invalid("Missing required param: id.", code="parameter_missing", param="id")
    amount = req.positive_int(form.get("amount"), "amount")
    refunded = req.non_negative_int(form.get("amount_refunded", "0"), "amount_refunded")
    currency = str(req.currency_code(form.get("currency", "")))  # "" is refused as invalid
    try:
        return await run_in_threadpool(
            _store(request).ensure_charge, form["id"], amount, currency, refunded
        )
    except ValueError as exc:
        raise req.invalid(str(exc), param="amount_refunded") from exc


@_router.get("/charges/{charge_id}")
async def retrieve_charge(charge_id: str, request: Request) -> dict[str, Any]:
    """Retrieve one charge, with how much of it is refunded."""
    charge = await run_in_threadpool(_store(request).get_charge, charge_id)
    if charge is None:
        raise req.missing("charge", charge_id)
    return charge


# -- responses ----------------------------------------------------------------------------


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
