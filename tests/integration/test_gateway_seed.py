"""The embedded gateway is seeded lazily: charges only for payments approved tickets refund."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from billing_recon import pipeline, runtime
from billing_recon.domain.fsm import State
from billing_recon.domain.money import to_minor_units
from billing_recon.domain.proposal import Proposal
from billing_recon.payments.gateway_store import GatewayStore, charges
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.models import Payment, Refund
from billing_recon.store.sample_data import generate


@pytest.fixture
def world(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[Deps, GatewayStore, list[Path]]]:
    """The sample data in a fresh database, a fresh gateway database, the sample inbox."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BILLING_RECON_GATEWAY_DB", f"sqlite:///{tmp_path}/gateway.db")
    monkeypatch.delenv("BILLING_RECON_GATEWAY_URL", raising=False)
    monkeypatch.delenv("BILLING_RECON_LLM", raising=False)
    runtime.reset()
    sample = generate(tmp_path / "sample", seed=7)
    deps = runtime.build()
    load_directory(deps.sessions, sample.data_dir)
    store = GatewayStore(deps.settings.gateway.db_url)
    yield deps, store, sorted(sample.inbox_dir.glob("*.eml"))
    store.close()
    runtime.reset()


def _approve_first_refund(deps: Deps, inbox: list[Path]) -> Proposal:
    """Run sample emails until one waits for approval with a refund; mark it APPROVED."""
    for path in inbox:
        ticket = pipeline.process_email(deps, path.read_bytes(), str(path))
        if ticket.state == State.APPROVAL_PENDING.value:
            tickets.transition(deps.sessions, ticket.id, State.APPROVED, actor="test",
                               expect=State.APPROVAL_PENDING)
            return Proposal.model_validate(ticket.proposal)
    raise AssertionError("no sample email reached APPROVAL_PENDING")


def _gateway_charges(store: GatewayStore) -> dict[str, tuple[int, int]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(charges.c.id, charges.c.amount, charges.c.amount_refunded))
        return {row.id: (row.amount, row.amount_refunded) for row in rows}


def _billing_charges(deps: Deps, payment_ids: set[str]) -> dict[str, tuple[int, int]]:
    """What each payment's charge must say: its amount and what was refunded before."""
    out: dict[str, tuple[int, int]] = {}
    with deps.sessions() as session:
        for pay in session.scalars(sa.select(Payment).where(Payment.payment_id.in_(payment_ids))):
            prior = sum((r.amount for r in session.scalars(
                sa.select(Refund).where(Refund.payment_id == pay.payment_id))), Decimal(0))
            out[pay.charge_ref or ""] = (to_minor_units(pay.amount, pay.currency),
                                         to_minor_units(prior, pay.currency))
    return out


def test_the_payments_of_an_approved_ticket_and_only_those_become_charges(
        world: tuple[Deps, GatewayStore, list[Path]]) -> None:
    deps, store, inbox = world
    proposal = _approve_first_refund(deps, inbox)
    paid = {p.payment_id for refund in proposal.refunds for p in refund.payments}
    with deps.sessions() as session:
        seeded = runtime.seed_gateway_charges(store, session)
        payments = session.scalar(sa.select(sa.func.count(Payment.payment_id))) or 0
    assert seeded == len(paid) < payments
    assert _gateway_charges(store) == _billing_charges(deps, paid)


def _client_for_refund(deps: Deps) -> dict[str, Any]:
    client = deps.refund_client()  # starts the embedded gateway and seeds it, as a refund does
    client.close()
    return {}


def test_each_new_refund_client_seeds_the_tickets_approved_since(
        world: tuple[Deps, GatewayStore, list[Path]]) -> None:
    deps, store, inbox = world
    _client_for_refund(deps)
    assert _gateway_charges(store) == {}
    proposal = _approve_first_refund(deps, inbox)
    _client_for_refund(deps)
    paid = {p.charge_ref for refund in proposal.refunds for p in refund.payments}
    assert set(_gateway_charges(store)) == paid
