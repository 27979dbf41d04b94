"""The offline model: deterministic rules that answer each agent without any network.

It is the embedded default so the demo and the tests run anywhere. Triage uses patterns,
analysis returns the reference script (an implementation of SPEC §4 independent of the trusted
rules, so the cross-check means something), summary fills a template. ``answer`` gives the raw
JSON-ready data, which the loopback chat server also sends over HTTP.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from billing_recon.domain.money import parse_written_amount
from billing_recon.llm.port import ChatMessage, Reply, T, Usage
from billing_recon.llm.reference_script import SCRIPT

_EMAIL = re.compile(r"<email>\n(.*)\n</email>", re.S)
_INVOICE = re.compile(r"\bINV-\d{1,12}\b", re.I)
_NUMBER = r"\d(?:[\d.,]*\d)?"
_AMOUNT = re.compile(rf"[$€£]\s?({_NUMBER})|({_NUMBER})\s?(?:€|£|\$|USD\b|EUR\b|GBP\b)")
_BILLING = re.compile(
    r"\b(invoice|invoiced|bill|billed|billing|charge|charged|overcharg\w*|refund\w*|payment|"
    r"paid|price|pricing|tax|credit|subscription|cancel\w*)\b",
    re.I,
)


def estimate_tokens(text: str) -> int:
    """A rough token count (4 characters a token) for usage accounting."""
    return max(1, len(text) // 4)


class OfflineModel:
    """A ChatModel that needs no network; deterministic for the same input."""

    name = "offline"

    def complete(self, agent: str, messages: list[ChatMessage], schema: type[T]) -> Reply[T]:
        """Answer with the agent's rule-based output, validated by ``schema``."""
        output = schema.model_validate(self.answer(agent, messages))
        prompt = sum(estimate_tokens(m["content"]) for m in messages)
        usage = Usage(prompt, estimate_tokens(_dump(output)))
        return Reply(output=output, usage=usage, model=self.name)

    def answer(self, agent: str, messages: list[ChatMessage]) -> dict[str, Any]:
        """The agent's answer as JSON-ready data (before schema validation)."""
        handler = {"triage": self._triage, "analysis": self._analysis, "summary": self._summary}
        if agent not in handler:
            raise ValueError(f"the offline model has no rules for agent {agent!r}")
        return handler[agent](messages)

    def _triage(self, messages: list[ChatMessage]) -> dict[str, Any]:
        match = _EMAIL.search(messages[-1]["content"])
        text = match.group(1) if match else ""
        ids = sorted({m.upper() for m in _INVOICE.findall(text)})
        amounts = [f"{v:.2f}" for a, b in _AMOUNT.findall(text)
                   if (v := parse_written_amount(a or b)) is not None]
        return {"is_billing": bool(ids or amounts or _BILLING.search(text)),
                "invoice_ids": ids, "claimed_amounts": amounts}

    def _analysis(self, messages: list[ChatMessage]) -> dict[str, Any]:
        return {"script": SCRIPT}

    def _summary(self, messages: list[ChatMessage]) -> dict[str, Any]:
        facts = json.loads(messages[-1]["content"])
        if facts["outcome"] == "refunded":
            body = (f"we have refunded {facts['amount']} {facts['currency']} for "
                    f"{', '.join(sorted(facts['invoices'] or {}))}. It should reach your account "
                    "within 5-10 business days.")
        elif facts["outcome"] == "no_discrepancy":
            body = "we reviewed your invoices and found that they were billed correctly."
        else:
            body = "after review, we are unable to issue a refund for this request."
        return {"reply": f"Hello,\n\nThank you for contacting us about ticket "
                         f"{facts['ticket_id']}: {body}\n\nBest regards,\nBilling team"}


def _dump(model: BaseModel) -> str:
    return model.model_dump_json()
