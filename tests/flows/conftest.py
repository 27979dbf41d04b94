"""One Prefect test harness per session; every test gets its own databases and storage."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import aresume_flow_run
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from billing_recon import runtime
from billing_recon.payments.gateway_store import GatewayStore
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.models import Customer, Invoice, InvoiceLine, Payment, PriceAgreement
from billing_recon.store.sample_data import generate


@pytest.fixture(scope="session", autouse=True)
def harness() -> Iterator[None]:
    """A single ephemeral Prefect backend for the whole session (starting one costs ~9 s)."""
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deps]:
    """Fresh billing and gateway databases, signing key and Prefect result storage."""
    with seeded_world(f"sqlite:///{tmp_path}/billing.db", tmp_path, monkeypatch) as deps:
        yield deps


@contextmanager
def seeded_world(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Deps]:
    """``world`` on the billing database ``db_url`` (an empty, migrated one)."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_RECON_GATEWAY_DB", f"sqlite:///{tmp_path}/gateway.db")
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BILLING_RECON_PAUSE_POLL_S", "1")
    monkeypatch.delenv("BILLING_RECON_GATEWAY_URL", raising=False)
    monkeypatch.delenv("BILLING_RECON_LLM", raising=False)
    runtime.reset()
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "prefect-storage"}):
        deps = runtime.build()
        _seed(deps)
        yield deps
    runtime.reset()


@contextmanager
def sample_world(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[tuple[Deps, Path, dict[str, Any]]]:
    """The generated sample data loaded into ``db_url``, with fresh gateway, key and storage.

    The model is whatever the environment selects when it is entered (offline by default).
    """
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_RECON_GATEWAY_DB", f"sqlite:///{tmp_path}/gateway.db")
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    runtime.reset()
    sample = generate(tmp_path / "sample", seed=7)
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "storage"}):
        deps = runtime.build()
        load_directory(deps.sessions, sample.data_dir)
        yield deps, sample.inbox_dir, sample.ground_truth
    runtime.reset()


def _seed(deps: Deps) -> None:
    """Ann: INV-000001 over-priced (6.60 back on PAY-1); INV-000002 paid twice (20.00 on PAY-3)."""
    day = datetime(2026, 3, 1, 9, tzinfo=UTC)
    with deps.sessions() as s, s.begin():
        s.add_all([
            Customer(customer_id="C1", name="Ann", email="ann@example.com", currency="USD",
                     tax_rate=Decimal("0.10"), tax_exempt=False),
            Customer(customer_id="C2", name="Bob", email="bob@example.com", currency="USD",
                     tax_rate=Decimal("0.10"), tax_exempt=False)])
        s.flush()
        s.add(PriceAgreement(customer_id="C1", sku="SKU-A", unit_price=Decimal("10.00"),
                             valid_from=date(2026, 1, 1), valid_to=None))
        for inv, cust, qty, price, total in [("INV-000001", "C1", 3, "12.00", "39.60"),
                                             ("INV-000002", "C1", 2, "10.00", "20.00"),
                                             ("INV-000003", "C2", 1, "5.00", "5.50")]:
            sub = Decimal(qty) * Decimal(price)
            tax = Decimal(total) - sub
            s.add(Invoice(invoice_id=inv, customer_id=cust, issued_at=day, currency="USD",
                          subtotal=sub, tax=tax, total=Decimal(total)))
            s.flush()
            sku = "SKU-A" if inv == "INV-000001" else "SKU-B"
            s.add(InvoiceLine(line_id=f"L-{inv}", invoice_id=inv, sku=sku, quantity=Decimal(qty),
                              unit_price=Decimal(price), amount=sub))
        s.flush()
        for pid, inv, amount, hour in [("PAY-1", "INV-000001", "39.60", 10),
                                       ("PAY-2", "INV-000002", "20.00", 10),
                                       ("PAY-3", "INV-000002", "20.00", 11),
                                       ("PAY-4", "INV-000003", "5.50", 10)]:
            s.add(Payment(payment_id=pid, invoice_id=inv, customer_id=inv and
                          ("C2" if inv == "INV-000003" else "C1"), amount=Decimal(amount),
                          currency="USD", paid_at=day.replace(hour=hour),
                          charge_ref=f"ch_{pid.lower()}"))
    # INV-000002 billed 20.00 = 2 x 10.00 with no tax although taxed at 10 %: 22.00 expected,
    # 40.00 paid -> 18.00 refundable (duplicate_payment, tax_error).


def email(tmp_path: Path, name: str, sender: str, body: str, message_id: str | None = None,
          subject: str = "A question") -> str:
    """Write an .eml file and return its path."""
    mid = message_id or f"<{name}@test>"
    raw = (f"From: {sender}\r\nTo: billing@example.com\r\nSubject: {subject}\r\n"
           f"Message-ID: {mid}\r\n\r\n{body}\r\n")
    path = tmp_path / f"{name}.eml"
    path.write_text(raw)
    return str(path)


async def wait_for_state(deps: Deps, ticket_id: int, *states: str, timeout: float = 60) -> Any:
    """Poll until the ticket is in one of ``states``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        ticket = tickets.get(deps.sessions, ticket_id)
        if ticket.state in states and (ticket.state != "APPROVAL_PENDING" or ticket.flow_run_id):
            return ticket
        await asyncio.sleep(0.1)
    ticket = tickets.get(deps.sessions, ticket_id)
    raise AssertionError(f"ticket stayed {ticket.state}({ticket.reason})")


async def wait_paused(flow_run_id: str, timeout: float = 60) -> None:
    """Wait until the run is Paused (after a refusal it re-pauses with a new key)."""
    async with get_client() as client:
        for _ in range(int(timeout * 10)):
            run = await client.read_flow_run(UUID(flow_run_id))
            if run.state is not None and run.state.is_paused():
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"flow run {flow_run_id} never paused")


async def decide_in_ui(ticket: Any, approve: bool, approver: str = "alice",
                       proposal_hash: str | None = None) -> None:
    """What the Prefect UI form does: resume the paused run with the form's input."""
    await wait_paused(ticket.flow_run_id)
    await aresume_flow_run(UUID(ticket.flow_run_id), run_input={
        "approve": approve, "approver": approver, "note": "",
        "proposal_hash": proposal_hash or ticket.proposal_hash})


def gateway_refunds(deps: Deps) -> list[dict[str, Any]]:
    """Every refund the local gateway holds."""
    store = GatewayStore(deps.settings.gateway.db_url)
    try:
        return store.list_refunds()
    finally:
        store.close()


@pytest.fixture
def anyio_backend() -> str:
    """Flows are async; run them on asyncio."""
    return "asyncio"
