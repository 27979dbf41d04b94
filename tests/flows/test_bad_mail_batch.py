"""Issue 14: bad mail never crashes or stops a batch, on SQLite and on PostgreSQL.

Before, binary garbage or a Latin-1 header raised UnicodeEncodeError, an unknown charset
stopped the batch without naming the file, and on PostgreSQL a long Message-ID or From or a
NUL byte raised DataError: no later email of the batch got a ticket.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_recon.domain.sender import DISPLAY_NAME_IS_ANOTHER_ADDRESS
from billing_recon.steps import intake
from billing_recon.steps.deps import Deps
from billing_recon.store import inbox, tickets
from billing_recon.store.models import Ticket
from billing_recon_flows.reconcile_inbox import reconcile_inbox
from tests.bad_mail import CORPUS, INTAKE, OUTCOMES, oversized_email
from tests.flows.conftest import email, seeded_world

pytestmark = [pytest.mark.flows, pytest.mark.anyio]


@pytest.fixture
def any_world(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deps]:
    """The seeded world on SQLite and on PostgreSQL."""
    with seeded_world(db_url, tmp_path, monkeypatch) as deps:
        yield deps


def _ticket(deps: Deps, path: str) -> Ticket:
    identity = intake.load_email(path, deps.settings.intake.max_email_bytes).identity
    ticket = inbox.find_for(deps.sessions, identity)
    assert ticket is not None, f"{path} has no ticket"
    return ticket


def _check(deps: Deps, path: str, expected: dict[str, object]) -> None:
    ticket = _ticket(deps, path)
    assert (ticket.state, ticket.reason) == (expected["state"], expected.get("reason")), path
    log = tickets.events(deps.sessions, ticket.id)
    assert log[0].payload["source"] == path
    if expected.get("reason") in INTAKE:  # recorded with the file and the problem
        assert log[-1].payload["file"] == path
        assert str(expected["problem"]) in log[-1].payload["problem"]
    else:
        assert ticket.sender == expected["sender"]
        flags = log[0].payload.get("sender_flags", [])
        assert (DISPLAY_NAME_IS_ANOTHER_ADDRESS in flags) is bool(expected.get("flagged")), path


async def test_bad_mail_batch_gives_every_good_email_its_ticket_and_every_bad_one_a_recorded_rejection(  # noqa: E501
        any_world: Deps, tmp_path: Path) -> None:
    bad = {str(CORPUS / name): expected for name, expected in OUTCOMES.items()}
    too_large = str(oversized_email(tmp_path, any_world.settings.intake.max_email_bytes + 1))
    bad[too_large] = {"state": "REJECTED", "reason": "email_too_large",
                      "problem": f"is {any_world.settings.intake.max_email_bytes + 1} bytes"}
    not_a_file = tmp_path / "folder.eml"
    not_a_file.mkdir()
    good = {email(tmp_path, "hello", "bob@example.com", "Hello there, lunch?"):
            {"state": "CLOSED", "reason": "not_billing", "sender": "bob@example.com"},
            email(tmp_path, "inv3", "bob@example.com", "Is INV-000003 right?"):
            {"state": "CLOSED", "reason": "no_discrepancy", "sender": "bob@example.com"}}
    paths = [*bad, str(not_a_file), *good]  # the good ones last: nothing before stops them
    results = await reconcile_inbox(email_paths=paths, approval_wait_s=0)
    assert len(results) == len(paths)
    assert results[len(bad)] == {"email": str(not_a_file), "error": f"cannot read email "
                                 f"{not_a_file}: Is a directory"}
    assert not any("error" in r for i, r in enumerate(results) if i != len(bad)), results
    for path, expected in {**bad, **good}.items():
        _check(any_world, path, expected)
    reused = _ticket(any_world, str(CORPUS / "reused-message-id.eml"))
    first = _ticket(any_world, str(CORPUS / "latin1-headers.eml"))
    assert reused.id != first.id
    assert tickets.events(any_world.sessions, reused.id)[0].payload[
        "message_id_collision"] == f"{tickets.format_ticket_id(first.id)} from ann@example.com"
