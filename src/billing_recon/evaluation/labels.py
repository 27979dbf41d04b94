"""The ground truth of a labelled email, and the folder a labelled corpus lives in.

A labelled folder holds ``data/*.csv`` (SPEC §3), ``inbox/*.eml`` and ``labels.jsonl``: one
JSON object per email, fields as ``Label`` below (docs/evaluation.md documents them for teams
labelling their own history). Only ``email`` and ``expected_state`` are required; a label
without ``is_billing`` or ``invoice_ids`` is simply not scored on triage. The demo's
``ground_truth.json`` (an object keyed by file name) is read as well.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from billing_recon.domain.fsm import State
from billing_recon.errors import UserInputError

LABELS = "labels.jsonl"
LEGACY_TRUTH = "ground_truth.json"


class RefundLabel(BaseModel):
    """The refund a correct system proposes for the email: one currency."""

    model_config = ConfigDict(frozen=True)

    amount: Decimal = Field(description="Total to refund, two decimals.")
    currency: str = Field(description="ISO currency code of the invoices.")
    invoices: dict[str, Decimal] = Field(description="Refundable amount per invoice id.")
    reasons: list[str] = Field(description="SPEC §4 reason codes, sorted.")


class Label(BaseModel):
    """What a correct system does with one email."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    email: str = Field(description="File name of the .eml in inbox/.")
    expected_state: State = Field(description="APPROVAL_PENDING, CLOSED, REJECTED, DUPLICATE "
                                  "or ESCALATED.")
    reason: str | None = Field(default=None, description="The state's reason code, if any.")
    kind: str = Field(default="unlabelled", description="What was planted (free text).")
    is_billing: bool | None = Field(default=None, description="Whether triage should call "
                                    "it a billing discrepancy; unset: not scored.")
    invoice_ids: list[str] | None = Field(default=None, description="Invoice ids the email "
                                          "references (canonical INV-...); unset: not scored.")
    refund: RefundLabel | None = Field(default=None, description="The refund to propose; "
                                       "null when none.")
    claimed: list[str] = Field(default_factory=list, description="Amounts the customer "
                               "claims, two-decimal strings (shown, never refunded).")
    scope: list[str] | None = Field(default=None, description="Invoice ids in scope "
                                    "(all the customer's when none is referenced); "
                                    "informative.")
    allocation: dict[str, Decimal] | None = Field(default=None, description="The refund "
                                                  "per payment id, newest payment first; "
                                                  "informative.")
    duplicate_of: str | None = Field(default=None, description="For a DUPLICATE: the file "
                                     "of the email it repeats.")
    variety: dict[str, Any] = Field(default_factory=dict, description="How the email is "
                                    "written (language, id_style, ...), for breakdowns.")


def read_labels(folder: Path) -> list[Label]:
    """The labels of a labelled folder, in file-name order (the order emails are processed)."""
    path, legacy = folder / LABELS, folder / LEGACY_TRUTH
    try:
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()
                    if line.strip()]
        elif legacy.is_file():
            rows = [{"email": name, **row}
                    for name, row in json.loads(legacy.read_text("utf-8")).items()]
        else:
            raise UserInputError(f"{folder} has neither {LABELS} nor {LEGACY_TRUTH}")
        labels = [Label.model_validate(row) for row in rows]
    except (ValueError, ValidationError) as exc:
        raise UserInputError(f"bad labels in {folder}: {exc}") from None
    return sorted(labels, key=lambda label: label.email)


def write_labels(folder: Path, labels: list[dict[str, Any]]) -> Path:
    """Write ``labels.jsonl`` (one sorted-key JSON object a line, in file-name order)."""
    path = folder / LABELS
    lines = [json.dumps(row, sort_keys=True, ensure_ascii=False)
             for row in sorted(labels, key=lambda row: str(row["email"]))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
