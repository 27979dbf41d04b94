"""The billing database block."""

from __future__ import annotations

from pydantic import Field
from sqlalchemy import Engine

from billing_recon.config import DatabaseSettings
from billing_recon.store.db import make_engine, migrate
from billing_recon_blocks.parts import DOCS_URL, SectionsBlock


class BillingDatabase(SectionsBlock):
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

    def get_engine(self) -> Engine:
        """A SQLAlchemy engine on the database, its schema migrated to the current head."""
        engine = make_engine(self.database.sqlalchemy_url)
        migrate(engine)
        return engine
