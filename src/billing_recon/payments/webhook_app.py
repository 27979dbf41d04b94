"""The webhook receiver's HTTP side: ``POST /v1/webhooks/stripe``, verified with the stripe SDK.

Every request's ``Stripe-Signature`` is checked by ``stripe.Webhook.construct_event`` with the
endpoint's secret and timestamp tolerance: a missing or bad signature (or a body that is no
event) is a 400 and changes nothing. An event type this receiver does not handle is answered
200 and ignored. A handled one is recorded (``record``: its id, type and refund) before the
200 goes out, and the work happens after, off the request (``wake``): Stripe wants a fast 2xx
and retries anything else.
"""

from __future__ import annotations

from collections.abc import Callable

import stripe
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from billing_recon.config.webhooks import PATH

#: The events that can change a refund's status (all carry the refund as ``data.object``).
HANDLED = frozenset({"refund.created", "refund.updated", "refund.failed",
                     "charge.refund.updated"})

Record = Callable[[str, str, str | None], bool]


def create_webhook_app(record: Record, wake: Callable[[], None], *, secret: str,
                       tolerance_s: int) -> FastAPI:
    """The receiver app; ``record(event_id, type, refund_id)`` stores an event (False for a
    duplicate id) and ``wake()`` has the work done."""
    app = FastAPI(title="billing-recon webhook receiver", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.post(PATH)
    async def receive(request: Request) -> JSONResponse:
        payload = await request.body()
        try:
            event = stripe.Webhook.construct_event(
                payload, request.headers.get("stripe-signature"), secret, tolerance=tolerance_s)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            return JSONResponse({"error": f"refused: {exc}"}, status_code=400)
        if event.type not in HANDLED:
            return JSONResponse({"received": True, "ignored": event.type})
        new = await run_in_threadpool(record, event.id, event.type, _refund_id(event))
        wake()
        return JSONResponse({"received": True, "duplicate": not new})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _refund_id(event: stripe.Event) -> str | None:
    """The refund an event is about (``data.object``), None if it carries none."""
    found = event.to_dict().get("data", {}).get("object") or {}
    refund_id = found.get("id") if found.get("object") == "refund" else None
    return refund_id if isinstance(refund_id, str) else None
