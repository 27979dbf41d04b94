"""Structured outputs of the agents (what the model must return)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TriageOutput(BaseModel):
    """Billing intent, referenced invoice ids and amounts the customer claims."""

    is_billing: bool = Field(description="Whether the email is about a billing discrepancy")
    invoice_ids: list[str] = Field(default_factory=list, description="Invoice ids like INV-000123")
    claimed_amounts: list[str] = Field(
        default_factory=list, description="Amounts the customer claims, as decimal strings"
    )


class AnalysisOutput(BaseModel):
    """A self-contained Python reconciliation script."""

    script: str = Field(description="Python source that prints the reconciliation JSON")


class SummaryOutput(BaseModel):
    """The reply drafted for the customer."""

    reply: str = Field(description="Plain-text reply to the customer")
