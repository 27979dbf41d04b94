"""Webhook settings: where gateway events go, the secret that signs them, the receiver service,
and how long the sweep keeps re-reading refunds that Stripe may still fail.

Set by ``BILLING_RECON_WEBHOOK_*``; the payment gateway block holds this section beside
``gateway``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from billing_recon.config.variables import Section

PATH = "/v1/webhooks/stripe"


class WebhookSettings(Section):
    """Signed gateway events (refund.created, refund.updated, refund.failed...) and the sweep."""

    env_prefix = "BILLING_RECON_WEBHOOK_"

    url: str | None = Field(
        default=None, description="Where the local gateway delivers its events: the "
        f"receiver's `POST {PATH}`. Unset: the embedded receiver's own address (the embedded "
        "default). With Stripe itself, register the receiver's public URL in Stripe instead.")
    secret: SecretStr | None = Field(
        default=None, description="The endpoint's signing secret (`whsec_...`, from Stripe "
        "for a real account); events without a valid `Stripe-Signature` are refused. Unset: "
        "a random `whsec_` key created once in `webhook.key` under the home folder, shared "
        "by the local gateway and the receiver.")
    host: str = Field(default="127.0.0.1", description="Address the receiver service "
                      "listens on (`python -m billing_recon.webhook_service`).")
    port: int = Field(default=8788, ge=0, le=65535, description="Port of the receiver "
                      "service; the embedded receiver takes any free port.")
    tolerance_s: int = Field(
        default=300, ge=1, description="Oldest `Stripe-Signature` timestamp accepted, in "
        "seconds (the stripe SDK's default): a replayed old event is refused.")
    late_failure_days: float = Field(
        default=14.0, ge=0, description="The sweep (`billing-recon refunds sync`) re-reads "
        "succeeded refunds this many days, since Stripe can still fail them.")
