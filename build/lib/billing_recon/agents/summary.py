"""Summary agent: drafts the reply to the customer from trusted facts only."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from billing_recon.agents.schemas import SummaryOutput
from billing_recon.llm.port import ChatMessage, ChatModel


@dataclass(frozen=True)
class ReplyFacts:
    """What the reply may say: the outcome computed by the system, never the email's claims."""

    ticket_id: str
    outcome: str  # "refunded" | "no_discrepancy" | "rejected_by_approver"
    currency: str | None = None
    amount: str | None = None
    invoices: dict[str, str] | None = None


def draft_messages(facts: ReplyFacts) -> list[ChatMessage]:
    """The summary prompt: the trusted facts as JSON (the email never reaches this agent)."""
    return [
        {"role": "system", "content": "Write a short, polite reply to a billing customer. "
         "State only the facts given as JSON; promise nothing else."},
        {"role": "user", "content": json.dumps(asdict(facts), sort_keys=True)},
    ]


def draft_reply(model: ChatModel, facts: ReplyFacts) -> str:
    """A short, polite reply stating the outcome."""
    return model.complete("summary", draft_messages(facts), SummaryOutput).output.reply
