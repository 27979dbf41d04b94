"""The gateway's storage semantics on SQLite and on PostgreSQL: idempotency keys, refund
atomicity and the remaining-amount guard under concurrency."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from billing_recon.payments.gateway_store import (
    ApiError,
    GatewayStore,
    RefundParams,
    StoredResponse,
    _Claim,
    charges,
    refunds,
)

FP = "f" * 64  # a request fingerprint; its computation is tested through HTTP


class Clock:
    """A settable clock so retention and leases need no sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty gateway database: a SQLite file, or a fresh PostgreSQL schema dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/gateway.db"
        return
    pg_url = request.getfixturevalue("pg_url").replace("postgresql://", "postgresql+psycopg://")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{pg_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def clock() -> Clock:
    """The stores' shared clock."""
    return Clock()


@pytest.fixture
def open_store(store_url: str, clock: Clock) -> Iterator[Callable[..., GatewayStore]]:
    """Opens stores on the database (each one an engine of its own, like a process)."""
    opened: list[GatewayStore] = []

    def _open(**kwargs: float) -> GatewayStore:
        store = GatewayStore(store_url, clock=clock, **kwargs)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., GatewayStore]) -> GatewayStore:
    """One store with charge ch_1 of 50.00 usd."""
    gateway = open_store()
    gateway.ensure_charge("ch_1", 5000, "usd")
    return gateway


def _params(amount: int | None = 1000, source: str = "ch_1") -> RefundParams:
    return RefundParams(source, source.startswith("pi_"), amount, "usd", None, {"t": "1"})


def _rows(store: GatewayStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(refunds)) or 0)


def _refunded(store: GatewayStore, charge_id: str = "ch_1") -> int:
    charge = store.get_charge(charge_id)
    assert charge is not None
    return int(charge["amount_refunded"])


def test_same_key_replays_the_stored_response(store: GatewayStore) -> None:
    first = store.refund(_params(), idempotency_key="k", fingerprint=FP)
    second = store.refund(_params(), idempotency_key="k", fingerprint=FP)
    assert (first.status, first.replayed, second.replayed) == (200, False, True)
    assert second.body == first.body
    assert (_rows(store), _refunded(store)) == (1, 1000)


def test_same_key_other_fingerprint_is_idempotency_error(store: GatewayStore) -> None:
    store.refund(_params(), idempotency_key="k", fingerprint=FP)
    with pytest.raises(ApiError) as info:
        store.refund(_params(2000), idempotency_key="k", fingerprint="0" * 64)
    assert (info.value.status, info.value.type) == (400, "idempotency_error")
    assert _rows(store) == 1


def test_key_in_flight_is_409(store: GatewayStore) -> None:
    assert isinstance(store.claim_key("k", FP), str)
    with pytest.raises(ApiError) as info:
        store.refund(_params(), idempotency_key="k", fingerprint=FP)
    assert (info.value.status, info.value.code) == (409, "idempotency_key_in_use")
    assert _rows(store) == 0


def test_stale_in_flight_key_is_taken_over_and_its_holder_cannot_commit(
    store: GatewayStore, clock: Clock
) -> None:
    stale_token = store.claim_key("k", FP)
    assert isinstance(stale_token, str)
    clock.now += store.lease_s + 1  # the holder died, or is hopelessly slow
    taken = store.refund(_params(), idempotency_key="k", fingerprint=FP)
    assert taken.status == 200
    # The old holder wakes up and tries to commit under its token: everything rolls back.
    with pytest.raises(ApiError) as info:
        store._execute(_params(), _Claim("k", stale_token))
    assert info.value.status == 409
    assert (_rows(store), _refunded(store)) == (1, 1000)


def test_error_response_is_stored_and_replayed(store: GatewayStore) -> None:
    first = store.refund(_params(source="ch_late"), idempotency_key="k", fingerprint=FP)
    assert (first.status, first.body["error"]["code"]) == (404, "resource_missing")
    store.ensure_charge("ch_late", 5000, "usd")
    again = store.refund(_params(source="ch_late"), idempotency_key="k", fingerprint=FP)
    assert (again.status, again.body, again.replayed) == (404, first.body, True)


def test_key_past_retention_is_purged_lazily_and_no_longer_replays(
    open_store: Callable[..., GatewayStore], clock: Clock
) -> None:
    store = open_store(retention_s=3600.0)
    store.ensure_charge("ch_1", 5000, "usd")
    first = store.refund(_params(), idempotency_key="k", fingerprint=FP)
    clock.now += 3599
    assert store.refund(_params(), idempotency_key="k", fingerprint=FP).replayed
    clock.now += 2
    second = store.refund(_params(), idempotency_key="k", fingerprint=FP)
    assert not second.replayed and second.body["id"] != first.body["id"]
    assert (_rows(store), _refunded(store)) == (2, 2000)


def test_purge_deletes_only_expired_keys(
    open_store: Callable[..., GatewayStore], clock: Clock
) -> None:
    store = open_store(retention_s=100.0)
    store.claim_key("old", FP)
    clock.now += 60
    store.claim_key("new", FP)
    clock.now += 41
    assert store.purge_expired_keys() == 1
    assert store.purge_expired_keys() == 0


def test_full_refund_when_amount_is_omitted(store: GatewayStore) -> None:
    store.refund(_params(1500), idempotency_key=None, fingerprint=FP)
    rest = store.refund(_params(None), idempotency_key=None, fingerprint=FP)
    assert rest.body["amount"] == 3500
    again = store.refund(_params(None), idempotency_key=None, fingerprint=FP)
    assert (again.status, again.body["error"]["code"]) == (400, "charge_already_refunded")


def test_over_refund_and_currency_mismatch_are_400(store: GatewayStore) -> None:
    too_large = store.refund(_params(5001), idempotency_key=None, fingerprint=FP)
    assert (too_large.status, too_large.body["error"]["code"]) == (400, "amount_too_large")
    eur = RefundParams("ch_1", False, 100, "eur")
    mismatch = store.refund(eur, idempotency_key=None, fingerprint=FP)
    assert (mismatch.status, mismatch.body["error"]["code"]) == (400, "currency_mismatch")
    assert _refunded(store) == 0


def test_failure_inside_the_refund_rolls_everything_back_and_frees_the_key(
    store: GatewayStore,
) -> None:
    # A metadata value that cannot be serialised fails the refund INSERT, after the charge's
    # UPDATE in the same transaction.
    broken = RefundParams("ch_1", False, 1000, "usd", None, {"t": object()})  # type: ignore[dict-item]
    with pytest.raises(Exception, match="serializable"):
        store.refund(broken, idempotency_key="k", fingerprint=FP)
    assert (_rows(store), _refunded(store)) == (0, 0)
    retry = store.refund(_params(), idempotency_key="k", fingerprint=FP)
    assert (retry.status, retry.replayed) == (200, False)


def test_ensure_charge_never_changes_an_existing_charge(store: GatewayStore) -> None:
    store.refund(_params(), idempotency_key=None, fingerprint=FP)
    again = store.ensure_charge("ch_1", 9999, "eur", amount_refunded=0)
    assert (again["amount"], again["currency"], again["amount_refunded"]) == (5000, "usd", 1000)


def test_database_refuses_a_charge_refunded_beyond_its_amount(store: GatewayStore) -> None:
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(charges.update().where(charges.c.id == "ch_1").values(amount_refunded=5001))


def _run_together(count: int, work: Callable[[int], StoredResponse | ApiError]) -> list[object]:
    barrier = threading.Barrier(count)
    results: list[object] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results.append(work(i))
        except ApiError as exc:
            results.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_refunds_never_exceed_the_charge(
    open_store: Callable[..., GatewayStore],
) -> None:
    stores = [open_store() for _ in range(2)]  # two engines, as two processes would have
    stores[0].ensure_charge("ch_1", 1000, "usd")
    results = _run_together(
        10, lambda i: stores[i % 2].refund(_params(300), idempotency_key=f"k{i}", fingerprint=FP)
    )
    statuses = sorted(r.status for r in results if isinstance(r, StoredResponse))
    assert statuses == [200] * 3 + [400] * 7
    assert (_rows(stores[0]), _refunded(stores[0])) == (3, 900)


def test_concurrent_requests_with_one_key_refund_once(
    open_store: Callable[..., GatewayStore],
) -> None:
    stores = [open_store() for _ in range(2)]
    stores[0].ensure_charge("ch_1", 100_000, "usd")
    results = _run_together(
        12, lambda i: stores[i % 2].refund(_params(), idempotency_key="same", fingerprint=FP)
    )
    ids = {r.body["id"] for r in results if isinstance(r, StoredResponse)}
    in_use = [r for r in results if isinstance(r, ApiError)]
    assert len(ids) == 1 and all(e.code == "idempotency_key_in_use" for e in in_use)
    assert (_rows(stores[0]), _refunded(stores[0])) == (1, 1000)
