"""The billing database block."""

from __future__ import annotations

from typing import Self

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from billing_recon.config import Settings
from blocks.parts import DOCS_URL, SettingsPart


class BillingDatabase(Block):
    """Where billing-recon keeps invoices, payments, tickets and the refund ledger.

    Example:
        ```python
        from blocks.database import BillingDatabase

        database = BillingDatabase.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Billing Recon Database"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    url: SecretStr = Field(
        description="SQLAlchemy URL of the billing database, e.g. "
        "postgresql://user:password@host:5432/billing or sqlite:///billing_recon.db; "
        "secret because it may hold a password.",
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The block that reproduces ``settings``' database."""
        return cls(url=SecretStr(settings.database_url))

    def settings_part(self) -> SettingsPart:
        """This block's share of the core ``Settings``."""
        return {"database_url": self.url.get_secret_value()}
