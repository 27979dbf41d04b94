"""What shadow mode keeps of one ticket: the label, what the system did, what it cost.

Plain data, so the metrics are a pure function of a list of records (tests build them by
hand) and a run can be saved as JSON lines and scored again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing_recon.evaluation.labels import Label

#: The state of a ticket whose run raised (an unreachable model server, say): never a
#: ticket state, so it is never counted as correct.
ERROR_STATE = "ERROR"


@dataclass(frozen=True)
class WouldRefund:
    """One currency of a proposal shadow mode stopped before: what would have been refunded."""

    currency: str
    amount: Decimal
    invoices: dict[str, Decimal]
    reasons: list[str]
    payments: dict[str, Decimal] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (amounts as two-place strings)."""
        return {"currency": self.currency, "amount": f"{self.amount:.2f}",
                "invoices": {k: f"{v:.2f}" for k, v in sorted(self.invoices.items())},
                "reasons": sorted(self.reasons),
                "payments": {k: f"{v:.2f}" for k, v in sorted(self.payments.items())}}


@dataclass(frozen=True)
class TicketRecord:
    """One labelled email as the configuration under test handled it."""

    label: Label
    state: str
    reason: str | None = None
    is_billing: bool | None = None  # triage's answer; None when triage never ran
    invoice_ids: list[str] | None = None  # ids triage reported (validated, canonical)
    would_refund: list[WouldRefund] = field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal | None = Decimal(0)  # None: a call's model is missing from the prices
    step_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens of every call."""
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        """JSON form, for saving a run (``--records``)."""
        return {"email": self.label.email, "state": self.state, "reason": self.reason,
                "is_billing": self.is_billing, "invoice_ids": self.invoice_ids,
                "would_refund": [w.as_dict() for w in self.would_refund],
                "calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cost_usd": None if self.cost_usd is None else f"{self.cost_usd:.6f}",
                "step_s": {k: round(v, 4) for k, v in self.step_s.items()},
                "error": self.error}
