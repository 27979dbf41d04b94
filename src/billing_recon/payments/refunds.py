"""The refund client: the project's only adapter on the official `stripe` SDK.

Amounts are Decimal everywhere else; they become minor units here and only here. Every call
carries an idempotency key (SPEC §5: `{ticket_key}:{payment_id}`), so the SDK's own retries
and ours can never refund twice. Stripe's exceptions become `GatewayError`.

A 409 `idempotency_key_in_use` means the key's first request is still running (or its holder
died and the gateway's key lease has not run out): the client keeps retrying it, with backoff,
for up to `busy_wait_s`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from decimal import Decimal

import stripe
from stripe.params import RefundCreateParams, RefundListParams

from billing_recon.config.sections import GatewaySettings
from billing_recon.domain.money import from_minor_units, to_minor_units
from billing_recon.errors import GatewayBusy, GatewayError, GatewayUnavailable, UserInputError


@dataclass(frozen=True)
class RefundRequest:
    """One refund to make: which charge, how much (Decimal, major units), under which key."""

    charge_ref: str
    amount: Decimal
    currency: str
    idempotency_key: str
    metadata: dict[str, str] = field(default_factory=dict)
    reason: str = "requested_by_customer"

    def __post_init__(self) -> None:
        """Refuse a request that could not be retried safely or makes no sense."""
        if not self.idempotency_key.strip():
            raise ValueError("a refund needs an idempotency key")
        if not self.charge_ref.strip():
            raise ValueError("a refund needs a charge or PaymentIntent reference")
        if self.amount <= 0:
            raise ValueError(f"refund amount must be positive: {self.amount}")
        to_minor_units(self.amount, self.currency)  # an unknown currency or a bad amount: now


@dataclass(frozen=True)
class GatewayRefund:
    """A refund as the gateway reports it."""

    gateway_refund_id: str
    charge_ref: str
    amount: Decimal
    currency: str
    status: str
    metadata: dict[str, str] = field(default_factory=dict)
    failure_reason: str | None = None


_DEFAULTS = GatewaySettings()


class RefundClient:
    """Makes refunds through Stripe's API (Stripe itself, or the local gateway at `base_url`)."""

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        max_network_retries: int = _DEFAULTS.retries,
        timeout_s: float = _DEFAULTS.timeout_s,
        busy_wait_s: float = _DEFAULTS.busy_wait_s,
    ) -> None:
        """`max_network_retries` covers connection errors, 409 (key in flight) and 5xx; the
        idempotency key makes each retry safe."""
        self.busy_wait_s = busy_wait_s
        self._http = stripe.RequestsClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base_url} if base_url else None,
            max_network_retries=max_network_retries,
            http_client=self._http,
        )

    @classmethod
    def from_settings(cls, gateway: GatewaySettings, base_url: str | None,
                      api_key: str | None = None) -> RefundClient:
        """A client with the gateway section's timeout, retries and busy wait, sending
        ``api_key`` (else the section's Stripe key)."""
        key = api_key or (gateway.stripe_api_key.get_secret_value()
                          if gateway.stripe_api_key else None)
        if not key:
            raise UserInputError("no gateway key: set BILLING_RECON_STRIPE_API_KEY (the "
                                 "gateway's secret key)")
        return cls(key, base_url,
                   max_network_retries=gateway.retries, timeout_s=gateway.timeout_s,
                   busy_wait_s=gateway.busy_wait_s)

    def refund(self, req: RefundRequest, *, retry: bool = True) -> GatewayRefund:
        """Refund `req.amount` of `req.charge_ref`; the same key always yields the same refund.

        With `retry=False` the request is sent once: no network retries, no waiting out a 409
        (only safe to retry when the key is replayed, which a caller without one cannot rely
        on).
        """
        deadline = time.monotonic() + self.busy_wait_s
        attempt = 0
        while True:
            try:
                return self._refund_once(req, retry)
            except GatewayError as exc:
                if not (retry and _in_use(exc)) or time.monotonic() >= deadline:
                    raise
            attempt += 1
            time.sleep(self.busy_pause(attempt))

    @staticmethod
    def busy_pause(attempt: int) -> float:
        """Seconds to wait before retrying a key in flight: capped exponential, with jitter."""
        return min(2.0, 0.1 * 2.0 ** attempt) * (0.5 + random.random() / 2)

    def _refund_once(self, req: RefundRequest, retry: bool) -> GatewayRefund:
        params = RefundCreateParams(
            amount=to_minor_units(req.amount, req.currency),
            currency=req.currency.lower(),
            reason=req.reason,
            metadata=dict(req.metadata),
        )
        # Stripe addresses a PaymentIntent and a Charge through different parameters.
        if req.charge_ref.startswith("pi_"):
            params["payment_intent"] = req.charge_ref
        else:
            params["charge"] = req.charge_ref
        options: stripe.RequestOptions = {"idempotency_key": req.idempotency_key}
        if not retry:
            options["max_network_retries"] = 0
        try:
            refund = self._client.v1.refunds.create(params=params, options=options)
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        return _to_gateway_refund(refund, via_pi=req.charge_ref.startswith("pi_"))

    def list_refunds(self, charge_ref: str | None = None) -> list[GatewayRefund]:
        """All refunds (newest first), optionally of one charge or PaymentIntent."""
        params = RefundListParams(limit=100)
        if charge_ref is not None and charge_ref.startswith("pi_"):
            params["payment_intent"] = charge_ref
        elif charge_ref is not None:
            params["charge"] = charge_ref
        try:
            page = self._client.v1.refunds.list(params=params)
            via_pi = charge_ref is not None and charge_ref.startswith("pi_")
            return [_to_gateway_refund(refund, via_pi) for refund in page.auto_paging_iter()]
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc

    def retrieve_refund(self, gateway_refund_id: str) -> GatewayRefund:
        """The refund as the gateway has it now (its current status): how a webhook event or
        the sweep learns the truth, whatever order events came in."""
        try:
            refund = self._client.v1.refunds.retrieve(gateway_refund_id)
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        return _to_gateway_refund(refund, via_pi=refund.charge is None)

    def find_refund(self, charge_ref: str, metadata: dict[str, str]) -> GatewayRefund | None:
        """The charge's refund whose metadata contains `metadata`, if the gateway has one.

        How a caller recovers when it cannot know whether an earlier call succeeded and cannot
        rely on the key being replayed.
        """
        for refund in self.list_refunds(charge_ref):
            if all(refund.metadata.get(k) == v for k, v in metadata.items()):
                return refund
        return None

    def close(self) -> None:
        """Close the HTTP session of the calling thread."""
        self._http.close()  # type: ignore[no-untyped-call]


def _to_gateway_refund(refund: stripe.Refund, via_pi: bool) -> GatewayRefund:
    # Stripe fills both fields for a PaymentIntent's charge: report the one we addressed.
    first, second = (
        (refund.payment_intent, refund.charge) if via_pi else (refund.charge, refund.payment_intent)
    )
    ref = first if first is not None else second
    if ref is None:
        raise GatewayUnavailable(f"refund {refund.id} names no charge or PaymentIntent")
    return GatewayRefund(
        gateway_refund_id=refund.id,
        charge_ref=ref if isinstance(ref, str) else ref.id,
        amount=from_minor_units(refund.amount, refund.currency),
        currency=refund.currency,
        status=str(refund.status),
        metadata=_metadata(refund),
        failure_reason=getattr(refund, "failure_reason", None),  # absent on older objects
    )


def _metadata(refund: stripe.Refund) -> dict[str, str]:
    # A StripeObject, which is deliberately not iterable: to_dict() is its plain-dict form.
    raw: dict[str, object] = refund.metadata.to_dict() if refund.metadata else {}
    return {str(k): str(v) for k, v in raw.items()}


def _in_use(exc: GatewayError) -> bool:
    return isinstance(exc, GatewayBusy) and exc.code == "idempotency_key_in_use"


def _gateway_error(exc: stripe.StripeError) -> GatewayError:
    """Keep Stripe's error code (falling back to its error type) and the HTTP status."""
    code = exc.code or (exc.error.code if exc.error else None)
    if code is None and isinstance(exc, stripe.APIConnectionError):
        code = "api_connection_error"
    elif code is None and isinstance(exc, stripe.AuthenticationError):
        code = "authentication_error"
    elif code is None and exc.error is not None:
        code = exc.error.type
    return GatewayError.of(exc.user_message or str(exc), code=code, status=exc.http_status)
