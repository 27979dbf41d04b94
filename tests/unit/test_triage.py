"""Email identity and triage validation (SPEC §5)."""

from __future__ import annotations

import hashlib

from billing_recon.agents.triage import triage
from billing_recon.domain.email import parse_email
from billing_recon.llm.offline import OfflineModel
from billing_recon.llm.port import ChatMessage, Reply, T, Usage

RAW = (b"From: Ann <ANN@Example.com >\r\nTo: billing@example.com\r\nSubject: INV-000001 wrong\r\n"
       b"Message-ID: <abc@x>\r\n\r\nI was charged $12.50 twice for INV-000001 and inv-000002.\r\n")


def test_email_is_identified_by_message_id_else_by_its_bytes() -> None:
    assert parse_email(RAW).email_id == "abc@x"
    raw = RAW.replace(b"Message-ID: <abc@x>\r\n", b"")
    assert parse_email(raw).email_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_sender_is_trimmed_and_lower_cased() -> None:
    assert parse_email(RAW).sender == "ann@example.com"


def test_offline_triage_finds_ids_and_claimed_amounts() -> None:
    result = triage(OfflineModel(), parse_email(RAW))
    assert result.is_billing
    assert result.invoice_ids == ["INV-000001", "INV-000002"]
    assert result.claimed_amounts == ["12.50"]


def test_non_billing_email_is_not_billing() -> None:
    raw = RAW.replace(b"INV-000001 wrong", b"Hello").replace(
        b"I was charged $12.50 twice for INV-000001 and inv-000002.", b"Where is my parcel?")
    assert not triage(OfflineModel(), parse_email(raw)).is_billing


class _Obedient:
    """A model that returns whatever the attacker asked for."""

    name = "obedient"

    def complete(self, agent: str, messages: list[ChatMessage], schema: type[T]) -> Reply[T]:
        data = {"is_billing": True, "invoice_ids": ["INV-1", "'; DROP TABLE invoices;--",
                                                    "../etc"], "claimed_amounts": ["5000", "x"]}
        return Reply(schema.model_validate(data), Usage(1, 1), self.name)


def test_triage_drops_ids_that_are_not_invoice_ids() -> None:
    result = triage(_Obedient(), parse_email(RAW))
    assert result.invoice_ids == ["INV-1"]
    assert result.dropped == ["'; DROP TABLE INVOICES;--", "../ETC"]
    assert result.claimed_amounts == ["5000.00"]
