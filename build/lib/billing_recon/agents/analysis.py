"""Analysis agent: authors (and repairs) the reconciliation script that runs in the sandbox."""

from __future__ import annotations

from dataclasses import dataclass

from billing_recon.agents.schemas import AnalysisOutput
from billing_recon.llm.port import ChatMessage, ChatModel, Usage
from billing_recon.store.billing import COLUMNS

MAX_FEEDBACK_CHARS = 2000

RULES = """\
All money exact (Decimal or scaled integers), rounded to cents with ROUND_HALF_UP.
1. Expected unit price = min(billed unit_price, agreed unit_price) when a price agreement for the
   line's sku is valid on the invoice's issue date (valid_from <= date <= valid_to, empty = open).
2. Expected line amount = round(quantity x expected unit price); the billed amount is not trusted.
3. If the invoice's subscription was cancelled on or before period_start, expected amounts are 0.
4. Expected subtotal = sum of lines; expected tax = 0 if tax_exempt else round(subtotal x rate).
5. Expected total = max(0, subtotal + tax - credits of the invoice).
6. Net paid = payments of the invoice - refunds already made on those payments.
7. Refundable = max(0, net paid - expected total).
8. Reasons: duplicate_payment, price_overcharge, post_cancellation, tax_error, credit_not_applied.
"""

OUTPUT = (
    'Print ONE JSON line: {"invoices": {"<invoice_id>": {"currency": "USD", "expected_total": '
    '"0.00", "net_paid": "0.00", "refundable": "0.00", "reasons": []}}, "totals": '
    '{"USD": "0.00"}} with every amount a two-place decimal string.'
)


@dataclass(frozen=True)
class Failure:
    """A failed attempt shown to the model so it can repair its script."""

    script: str
    error: str


@dataclass(frozen=True)
class Authored:
    """A script and what it cost."""

    script: str
    usage: Usage


def schema_text() -> str:
    """The CSV files in the sandbox's working directory and their columns."""
    return "\n".join(f"{name}.csv: {', '.join(cols)}" for name, cols in COLUMNS.items())


def _tail(text: str) -> str:
    return text if len(text) <= MAX_FEEDBACK_CHARS else "...\n" + text[-MAX_FEEDBACK_CHARS:]


def build_messages(failures: list[Failure]) -> list[ChatMessage]:
    """The task, the data schema, the rules and the previous failures (truncated)."""
    task = (f"Write a Python 3 script using pandas that reads these CSV files from the current "
            f"directory (all values are strings; empty = null):\n{schema_text()}\n\n"
            f"Rules:\n{RULES}\n{OUTPUT}")
    messages: list[ChatMessage] = [
        {"role": "system", "content": "You write correct, self-contained Python scripts."},
        {"role": "user", "content": task},
    ]
    for failure in failures:
        # An unusable answer has no script; an empty assistant turn confuses some servers.
        messages.append({"role": "assistant", "content": _tail(failure.script) or "(none)"})
        messages.append({"role": "user", "content": "It failed:\n" + _tail(failure.error)
                         + "\nReturn a fixed script."})
    return messages


def author_script(model: ChatModel, failures: list[Failure]) -> Authored:
    """Ask the model for a script, showing it every earlier failure of this ticket."""
    reply = model.complete("analysis", build_messages(failures), AnalysisOutput)
    return Authored(script=reply.output.script, usage=reply.usage)
