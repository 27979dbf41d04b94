"""The payment gateway block: the embedded local gateway or a Stripe-compatible URL."""

from __future__ import annotations

from pydantic import Field

from billing_recon.config import GatewaySettings, WebhookSettings
from billing_recon.errors import UserInputError
from billing_recon.payments.refunds import RefundClient
from billing_recon_blocks.parts import DOCS_URL, SectionsBlock


class PaymentGateway(SectionsBlock):
    """Where refunds are sent: Stripe (or a compatible server) or the embedded local gateway.

    Example:
        ```python
        from billing_recon_blocks.gateway import PaymentGateway

        client = PaymentGateway.load("BLOCK_NAME").get_client()
        ```
    """

    _block_type_name = "Billing Recon Payment Gateway"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    gateway: GatewaySettings = Field(description="The gateway's URL, key and network limits.")
    webhooks: WebhookSettings = Field(description="Where gateway events go, their signing "
                                      "secret, the receiver service and the sweep's window.")

    def get_client(self, base_url: str | None = None,
                   api_key: str | None = None) -> RefundClient:
        """A refund client for the gateway URL (or ``base_url`` with its ``api_key``, e.g. a
        local gateway's)."""
        url = base_url or self.gateway.url
        if not url:
            raise UserInputError("this gateway block names no URL: the flows start the "
                                 "embedded local gateway themselves; pass its base_url")
        return RefundClient.from_settings(self.gateway, url, api_key)
