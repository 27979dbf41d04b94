"""One-time codes count once and wrong ones lock an approver out (issue 14, item 4), on
SQLite and PostgreSQL: the gate's decisions (CLI and UI share them) and the code check's own
atomicity under concurrent guesses."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from billing_recon.domain import totp
from billing_recon.errors import ApprovalRefused, ApproverLocked
from billing_recon.steps import approval_gate
from billing_recon.store import approvers, code_attempts
from billing_recon.store.models import Approver, SpentCode, UsedCode
from tests.integration.gate_support import Gate, now_code, refused, wrong_code


def _actions(gate: Gate, name: str) -> list[str]:
    return [row.action for row in approvers.audit(gate.deps.sessions, name)]


def _at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released together; their results (or errors)."""
    start, results = threading.Barrier(count), [None] * count

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # compared by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_code_rate_a_code_accepted_on_one_ticket_is_refused_on_another(gate: Gate) -> None:
    secret = gate.enroll("carol")
    first, second = gate.pending(), gate.pending()
    code = now_code(secret)
    assert gate.decide(first, "carol", code).state == "APPROVED"
    refused(gate, second, "this one-time code was already used", "carol", code)
    refused(gate, second, "this one-time code was already used", "carol", code, approve=False)
    assert gate.decide(second, "carol", now_code(secret, 1)).state == "APPROVED"
    with gate.deps.sessions() as s:
        assert len(list(s.scalars(select(SpentCode.step)))) == 2


def test_code_rate_one_command_spends_its_code_once_for_all_its_tickets(gate: Gate) -> None:
    secret = gate.enroll("carol")
    first, second, third, later = gate.pending(), gate.pending(), gate.pending(), gate.pending()
    code = now_code(secret)
    proof = gate.prove("carol", code)  # `approve T1 T2 T3`: the code is checked once
    assert gate.decide(first, "carol", code, proof=proof).state == "APPROVED"
    assert gate.decide(second, "carol", code, proof=proof).state == "APPROVED"
    assert gate.decide(third, "carol", code, False, proof).state == "REJECTED_BY_APPROVER"
    with gate.deps.sessions() as s:
        assert list(s.execute(select(SpentCode.approver, SpentCode.step)).tuples()) == [
            ("carol", proof.step)]
        assert sorted(s.scalars(select(UsedCode.ticket_id))) == sorted(
            [first.id, second.id, third.id])
    with pytest.raises(ApprovalRefused, match="already used"):
        gate.prove("carol", code)  # a second command
    refused(gate, later, "already used", "carol", code)  # or the UI's form


def test_code_rate_eight_wrong_codes_lock_the_approver_and_the_right_one_is_refused(
        gate: Gate) -> None:
    """The issue's case: 8 wrong codes in 31 s, then an accepted one (default: 5 lock)."""
    secret = gate.enroll("carol")
    ticket, wrong = gate.pending(), wrong_code(secret)
    for n in range(1, 9):
        with pytest.raises(ApprovalRefused) as refusal:
            gate.decide(ticket, "carol", wrong)
        assert isinstance(refusal.value, ApproverLocked) == (n >= 5), n
        assert ("now locked out" in str(refusal.value)) == (n == 5), str(refusal.value)
        assert wrong not in str(refusal.value)
    refused(gate, ticket, "'carol' is locked out after too many wrong one-time codes; an "
            "administrator unlocks it", "carol", now_code(secret))
    assert _actions(gate, "carol") == ["add", *["wrong_code"] * 5, "lockout"]
    assert approval_gate.decisions(gate.deps, ticket.id) == []
    lockout = approvers.audit(gate.deps.sessions, "carol")[-1]
    assert lockout.details == {"wrong_codes": 5, "window_s": 900.0}
    row = approvers.get(gate.deps.sessions, "carol")
    assert row is not None and row.locked_at is not None


def test_code_rate_a_wrong_code_in_a_command_counts_once_for_all_its_tickets(
        gate: Gate) -> None:
    gate.approval(max_wrong_codes=2)
    secret = gate.enroll("carol")
    with pytest.raises(ApprovalRefused, match="wrong or expired"):
        gate.prove("carol", wrong_code(secret))  # `approve T1 T2 T3 --code WRONG`
    assert _actions(gate, "carol") == ["add", "wrong_code"]
    wrong = approvers.audit(gate.deps.sessions, "carol")[-1]
    assert wrong.actor == "cli:carol" and wrong.details == {"channel": "cli"}
    assert gate.prove("carol", now_code(secret)).verified


def test_code_rate_the_window_forgets_old_wrong_codes_and_an_unlock_forgives_them(
        gate: Gate) -> None:
    gate.approval(max_wrong_codes=2, wrong_code_window_s=1.0)
    secret = gate.enroll("carol")
    ticket, wrong = gate.pending(), wrong_code(secret)
    refused(gate, ticket, "wrong or expired", "carol", wrong)
    time.sleep(1.1)  # out of the window: it no longer counts
    refused(gate, ticket, "wrong or expired", "carol", wrong)
    refused(gate, ticket, "now locked out", "carol", wrong)
    assert approvers.unlock(gate.deps.sessions, "carol", "dora", {"via": "test"})
    assert not approvers.unlock(gate.deps.sessions, "carol", "dora", {"via": "test"})
    refused(gate, ticket, "wrong or expired", "carol", wrong)  # the two before are forgiven
    assert gate.decide(ticket, "carol", now_code(secret)).state == "APPROVED"
    assert _actions(gate, "carol")[-3:] == ["lockout", "unlock", "wrong_code"]


def test_code_rate_concurrent_guesses_get_no_extra_tries(gate: Gate) -> None:
    """Eight processes guessing at once: three are judged (the third locks), five find the
    approver locked; none compares its code with a try the limit did not leave."""
    secret = gate.enroll("carol")
    key, wrong = gate.deps.settings.approver_key(), wrong_code(secret)

    def slow_secret(row: Approver) -> str:  # widens the window between reading and writing
        time.sleep(0.05)
        return approvers.secret_of(key, row)

    outcomes = _at_once(8, lambda _: code_attempts.check(
        gate.deps.sessions, "carol", slow_secret, wrong, time.time(),
        code_attempts.Limit(3, 900.0), spend=True, actor="test", context={}).outcome)
    assert sorted(outcomes) == ["locked"] * 5 + ["wrong"] * 3
    assert _actions(gate, "carol") == ["add", "wrong_code", "wrong_code", "wrong_code",
                                       "lockout"]


def test_code_rate_the_same_code_on_two_tickets_at_once_counts_once(gate: Gate) -> None:
    secret = gate.enroll("carol")
    pending = [gate.pending(), gate.pending()]
    code = now_code(secret)
    results = _at_once(2, lambda i: gate.decide(pending[i], "carol", code).state)
    assert sorted(map(str, results)) == [
        "'carol': this one-time code was already used; wait for the next one (one command "
        "may decide several tickets with it)", "APPROVED"]


def test_code_rate_an_accepted_code_sent_again_late_is_refused_but_is_no_guess(
        gate: Gate) -> None:
    """A resumed run may hand in the code its CLI decision spent minutes ago: refused, but not
    counted towards the lockout (it was right once; a guess never was)."""
    secret = gate.enroll("carol")
    key, at = gate.deps.settings.approver_key(), time.time()
    code = totp.code_at(secret, at)

    def check(when: float) -> code_attempts.Check:
        return code_attempts.check(gate.deps.sessions, "carol",
                                   lambda row: approvers.secret_of(key, row), code, when,
                                   code_attempts.Limit(1, 900.0), spend=True, actor="test",
                                   context={})

    assert check(at).outcome == "accepted"
    assert check(at).outcome == "spent"
    assert check(at + 5 * totp.STEP_S).outcome == "late"
    assert _actions(gate, "carol") == ["add"]  # no wrong code, no lockout (the limit is 1)
    assert check(at + 40 * totp.STEP_S).outcome == "wrong"  # long after: as any wrong code
