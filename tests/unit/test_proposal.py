"""Allocation newest first, the proposal hash and the approval token (SPEC §4, §6)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing_recon.domain.approval import mint_token, verify_token
from billing_recon.domain.proposal import PaymentBalance, allocate, build_proposal
from billing_recon.domain.ticket_key import refund_idempotency_key, ticket_key


def _pay(pid: str, day: int, remaining: str, invoice: str = "INV-1") -> PaymentBalance:
    return PaymentBalance(pid, invoice, f"ch_{pid}", "USD", datetime(2026, 3, day, tzinfo=UTC),
                          Decimal(remaining))


def test_allocation_takes_newest_payment_first() -> None:
    out = allocate(Decimal("30.00"), [_pay("p1", 1, "50.00"), _pay("p2", 5, "20.00")])
    assert [(p.payment_id, p.amount) for p in out] == [("p2", Decimal("20.00")),
                                                       ("p1", Decimal("10.00"))]


def test_allocation_never_exceeds_a_payments_remaining_amount() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        allocate(Decimal("30.01"), [_pay("p1", 1, "10.00"), _pay("p2", 2, "20.00")])


def test_proposal_groups_by_currency_and_hash_is_stable() -> None:
    invoices = {"INV-1": {"currency": "USD", "refundable": "5.00", "reasons": ["tax_error"]},
                "INV-2": {"currency": "USD", "refundable": "0.00", "reasons": []}}
    a = build_proposal("k", "C1", invoices, [_pay("p1", 1, "50.00")])
    b = build_proposal("k", "C1", dict(reversed(invoices.items())), [_pay("p1", 1, "50.00")])
    assert a.hash() == b.hash()
    assert [r.amount for r in a.refunds] == [Decimal("5.00")]
    changed = build_proposal("k", "C1", {**invoices, "INV-1": {**invoices["INV-1"],
                                                               "refundable": "5.01"}},
                             [_pay("p1", 1, "50.00")])
    assert changed.hash() != a.hash()


def test_token_is_bound_to_key_hash_and_approvers() -> None:
    key = b"secret"
    token = mint_token(key, "tk", "h1", ["alice"])
    assert verify_token(key, token, "tk", "h1", ["alice"])
    assert not verify_token(key, token, "tk", "h2", ["alice"])
    assert not verify_token(key, token, "tk2", "h1", ["alice"])
    assert not verify_token(key, token, "tk", "h1", ["mallory"])
    assert not verify_token(b"other", token, "tk", "h1", ["alice"])
    assert not verify_token(key, None, "tk", "h1", ["alice"])


def test_ticket_key_ignores_case_order_and_repeats() -> None:
    assert ticket_key("A@X.com ", ["INV-2", "INV-1"]) == ticket_key("a@x.com", ["INV-1", "INV-2",
                                                                             "INV-1"])
    assert ticket_key("a@x.com", ["INV-1"]) != ticket_key("a@x.com", ["INV-2"])
    assert refund_idempotency_key("k", "PAY-1") == "k:PAY-1"
