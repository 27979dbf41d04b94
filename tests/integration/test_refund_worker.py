"""The refund worker against a real gateway process: crashes between the gateway's answer and
the ledger write, layer by layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_recon import runtime
from billing_recon.config import from_variables
from billing_recon.errors import UserInputError
from billing_recon.steps import refund_worker
from billing_recon.steps.deps import Deps
from billing_recon.steps.switches import Switches
from billing_recon.store import ledger
from tests.chaos.harness import World, direct_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Billing database, a gateway process and an approved ticket factory."""
    with direct_world(tmp_path / "w") as made:
        yield made


def _deps(world: World, monkeypatch: pytest.MonkeyPatch, off: str) -> Deps:
    for name, value in world.env(BILLING_RECON_LAYERS_OFF=off).items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    return runtime.build()


@pytest.mark.parametrize("off", ["cache,ledger", "cache,gateway_idempotency"])
def test_rerun_after_a_crash_before_the_ledger_write_records_the_same_refunds(
        world: World, monkeypatch: pytest.MonkeyPatch, off: str) -> None:
    """With only the gateway layer the key is replayed; with only the ledger the write-ahead
    claim already holds the gateway's answer."""
    deps = _deps(world, monkeypatch, off)
    exp = world.approved_ticket(2)
    lost = refund_worker.execute_refund(deps, exp.ticket_id, "test")  # then the crash
    again = refund_worker.execute_refund(deps, exp.ticket_id, "test")
    assert [r.gateway_refund_id for r in again] == [r.gateway_refund_id for r in lost]
    refund_worker.record_refunds(deps, exp.ticket_id, again, "test")
    with deps.sessions() as s:
        rows = [r for r in ledger.all_refunds(s) if r.ticket_id == exp.ticket_id]
    assert sorted(r.gateway_refund_id or "" for r in rows) == sorted(
        r.gateway_refund_id for r in lost)
    for charge in exp.refunds:
        assert len(world.gateway_store.list_refunds(charge)) == 1


def test_with_no_layer_the_same_rerun_refunds_twice(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    deps = _deps(world, monkeypatch, "cache,ledger,gateway_idempotency")
    exp = world.approved_ticket(1)
    refund_worker.execute_refund(deps, exp.ticket_id, "test")
    refund_worker.execute_refund(deps, exp.ticket_id, "test")
    assert len(world.gateway_store.list_refunds(next(iter(exp.refunds)))) == 2


def test_unknown_layer_names_are_refused() -> None:
    with pytest.raises(UserInputError, match="BILLING_RECON_LAYERS_OFF item 'ledgr': Input "
                       "should be 'cache', 'ledger'"):
        Switches.from_settings(from_variables({"BILLING_RECON_LAYERS_OFF": "cache,ledgr"}).switches)


def test_production_deps_switch_nothing_off_whatever_the_environment_says_later(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    deps = _deps(world, monkeypatch, "")
    monkeypatch.setenv("BILLING_RECON_LAYERS_OFF", "cache,ledger,gateway_idempotency")
    exp = world.approved_ticket(1)
    refund_worker.execute_refund(deps, exp.ticket_id, "test")  # read once, at build: all on
    refund_worker.execute_refund(deps, exp.ticket_id, "test")
    assert len(world.gateway_store.list_refunds(next(iter(exp.refunds)))) == 1
