"""Leases and the Prefect lock manager on them: exclusive, and expiring when the holder dies."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from billing_recon.config import load
from billing_recon.errors import UserInputError
from billing_recon.store.db import make_engine
from billing_recon.store.leases import LeaseStore


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """An empty SQLite database (the lease table is the module's own)."""
    return make_engine(f"sqlite:///{tmp_path}/leases.db")


def test_a_held_lease_excludes_others_until_released(engine: Engine) -> None:
    leases = LeaseStore(engine, lease_s=60)
    assert leases.try_acquire("k", "a") and not leases.try_acquire("k", "b")
    assert leases.holder("k") == "a"
    assert leases.release("k", "a") and leases.try_acquire("k", "b")


def test_a_dead_holders_lease_is_taken_over_once_it_expires(engine: Engine) -> None:
    clock = Clock()
    leases = LeaseStore(engine, lease_s=5, clock=clock)
    assert leases.try_acquire("k", "dead")
    clock.now += 4.9
    assert not leases.try_acquire("k", "b")
    clock.now += 0.2
    assert leases.holder("k") is None and leases.try_acquire("k", "b")
    assert not leases.release("k", "dead")  # its late release changes nothing
    assert leases.holder("k") == "b"


def test_acquire_waits_at_most_the_lease(engine: Engine) -> None:
    leases = LeaseStore(engine, lease_s=0.5)
    assert leases.try_acquire("k", "dead")
    assert not leases.acquire("k", "b", timeout=0.1)
    assert leases.acquire("k", "b", timeout=None)  # returns once the lease ran out


def test_lease_length_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_RECON_REFUND_LEASE_S", "42")
    assert load().orchestration.refund_lease_s == 42
    monkeypatch.setenv("BILLING_RECON_REFUND_LEASE_S", "0")
    with pytest.raises(UserInputError,
                       match=r"BILLING_RECON_REFUND_LEASE_S='0': .*greater than 0"):
        load()
