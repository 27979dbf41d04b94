"""The billing database block."""

from __future__ import annotations

from typing import Any, Self

from prefect.blocks.core import Block
from pydantic import Field, model_validator
from sqlalchemy import Engine

from billing_recon.config import DatabaseSettings, Settings
from billing_recon.config.variables import Section
from billing_recon.store.db import make_engine, migrate
from billing_recon_blocks.parts import DOCS_URL, required


class BillingDatabase(Block):
    """Where billing-recon keeps invoices, payments, tickets and the refund ledger.

    Example:
        ```python
        from billing_recon_blocks.database import BillingDatabase

        engine = BillingDatabase.load("BLOCK_NAME").get_engine()
        ```
    """

    _block_type_name = "Billing Recon Database"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    database: DatabaseSettings = Field(description="The billing database's URL.")

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        return required(data, "database")

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The block that holds ``settings``' database section."""
        return cls(database=settings.database)

    def sections(self) -> dict[str, Section]:
        """The settings sections this block holds (they replace the environment's)."""
        return {"database": self.database}

    def get_engine(self) -> Engine:
        """A SQLAlchemy engine on the database, its schema migrated to the current head."""
        engine = make_engine(self.database.sqlalchemy_url)
        migrate(engine)
        return engine
