"""The ledger's write-ahead call claims: new, busy while the holder lives, stale after its lease,
done once answered."""

from __future__ import annotations

from pathlib import Path

from billing_recon.store import ledger
from billing_recon.store.db import make_engine


def test_claims_follow_the_holder_and_its_lease(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/ledger.db")
    now = [100.0]

    def claim(holder: str) -> ledger.CallClaim:
        return ledger.claim_call(engine, "t:P1", ticket_id=1, payment_id="P1", holder=holder,
                                 lease_s=10, clock=lambda: now[0])

    assert claim("a").status == "new"
    assert claim("b").status == "busy"  # a may be calling right now
    now[0] += 11
    assert claim("b").status == "stale"  # a died: b must look the refund up first
    assert claim("c").status == "busy"
    ledger.finish_call(engine, "t:P1", "re_1")
    assert claim("c") == ledger.CallClaim("done", "re_1")


def test_a_released_claim_lets_the_next_worker_call(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/ledger.db")
    first = ledger.claim_call(engine, "k", ticket_id=1, payment_id="P", holder="a", lease_s=60)
    assert first.status == "new"
    ledger.release_call(engine, "k", "a")
    assert ledger.claim_call(engine, "k", ticket_id=1, payment_id="P", holder="b",
                             lease_s=60).status == "new"
