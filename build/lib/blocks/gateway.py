"""The payment gateway block: the embedded local gateway or a Stripe-compatible URL."""

from __future__ import annotations

from typing import Self

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from billing_recon.config import Settings
from blocks.parts import DOCS_URL, SettingsPart


class PaymentGateway(Block):
    """Where refunds are sent: Stripe (or a compatible server) or the embedded local gateway.

    Example:
        ```python
        from blocks.gateway import PaymentGateway

        gateway = PaymentGateway.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Billing Recon Payment Gateway"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    url: str | None = Field(
        default=None, description="Base URL of a Stripe-compatible API, e.g. "
        "https://api.stripe.com; empty runs the embedded local gateway on 127.0.0.1.")
    stripe_api_key: SecretStr = Field(default=SecretStr("sk_test_local"),
                                      description="Stripe secret key sent with every refund.")
    gateway_db: str = Field(
        default="sqlite:///billing_recon_gateway.db",
        description="Database of the embedded local gateway (charges, refunds, idempotency "
        "keys); unused with a URL.")

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The block that reproduces ``settings``' gateway."""
        return cls(url=settings.gateway_url, stripe_api_key=SecretStr(settings.stripe_api_key),
                   gateway_db=settings.gateway_db)

    def settings_part(self) -> SettingsPart:
        """This block's share of the core ``Settings``."""
        return {"gateway_url": self.url or None, "gateway_db": self.gateway_db,
                "stripe_api_key": self.stripe_api_key.get_secret_value()}
