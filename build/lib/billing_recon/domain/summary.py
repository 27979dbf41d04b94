"""What a reconciliation script must print: its summary, as a typed model (SPEC §4 codes)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from billing_recon.domain.rules import ReasonCode

Money = Annotated[str, StringConstraints(pattern=r"^\d+\.\d{2}$")]


class InvoiceFinding(BaseModel):
    """One invoice in the script's output: what is refundable and why."""

    model_config = ConfigDict(frozen=True, extra="allow")
    refundable: Money
    reasons: list[ReasonCode]
    currency: str | None = None


class SandboxSummary(BaseModel):
    """The script's JSON: one finding per in-scope invoice (extra keys are kept, unused)."""

    model_config = ConfigDict(frozen=True, extra="allow")
    invoices: dict[str, InvoiceFinding]

    @classmethod
    def parse(cls, data: Any, invoice_ids: list[str]) -> SandboxSummary:
        """Validate the script's output; ValueError with a short reason for the repair prompt."""
        try:
            summary = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "output"
            raise ValueError(f"{where}: {first['msg']} (expected a JSON object "
                             '{"invoices": {ID: {"refundable": "0.00", "reasons": [...]}}})'
                             ) from None
        if sorted(summary.invoices) != sorted(invoice_ids):
            raise ValueError(f"output covers {sorted(summary.invoices)}, expected "
                             f"{sorted(invoice_ids)}")
        return summary
