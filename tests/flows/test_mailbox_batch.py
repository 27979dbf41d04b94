"""reconcile-inbox with ``mailbox=True``: the sample inbox delivered to a real IMAP server
(dovecot) becomes one ticket per email, each ticket runs, and the replies and approver notices
reach a real SMTP server (aiosmtpd) once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_UI_URL, temporary_settings

from billing_recon import runtime
from billing_recon.domain.fsm import State
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon_flows.reconcile_inbox import reconcile_inbox
from tests.flows.conftest import sample_world
from tests.mail import smtp_server
from tests.mail.certs import Certs
from tests.mail.conftest import certs, imap_env, imap_server, smtp_env  # noqa: F401
from tests.mail.dovecot import Dovecot, free_port

pytestmark = [pytest.mark.flows, pytest.mark.anyio]
UI = "http://prefect.acme.test:4200"


@pytest.fixture
def mailbox_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imap_server: Dovecot,  # noqa: F811
                  certs: Certs) -> Iterator[tuple[Deps, Dovecot, smtp_server.SmtpServer, int]]:  # noqa: F811
    """The sample data loaded, its emails delivered to the mailbox, both servers configured."""
    smtp = smtp_server.start(free_port(), certs, tmp_path / "received", "tls")
    for name, value in {**imap_env(imap_server, certs), **smtp_env(smtp, certs, "tls"),
                        "BILLING_RECON_PAUSE_POLL_S": "1"}.items():
        monkeypatch.setenv(name, value)
    try:
        with sample_world(f"sqlite:///{tmp_path}/billing.db", tmp_path, monkeypatch) as (
                deps, inbox, truth):
            for path in sorted(inbox.glob("*.eml")):
                imap_server.deliver(path.read_bytes(), path.stem)
            yield deps, imap_server, smtp, len(truth)
    finally:
        smtp.stop()
        runtime.reset()


def _to(messages: list[Any]) -> Counter[str]:
    return Counter(str(m["To"]) for m in messages)


async def test_mailbox_batch_runs_each_email_once_and_mails_each_reply_and_notice_once(
        mailbox_world: tuple[Deps, Dovecot, smtp_server.SmtpServer, int]) -> None:
    deps, _, smtp, emails = mailbox_world
    with temporary_settings({PREFECT_UI_URL: UI}):
        results = await reconcile_inbox(mailbox=True, approval_wait_s=0)
    assert len(results) == emails == tickets.count(deps.sessions)
    states = Counter((r["state"], r.get("reason")) for r in results)
    pending = [tickets.get(deps.sessions, tickets.parse_ticket_id(r["ticket_id"]))
               for r in results if r["state"] == State.APPROVAL_PENDING.value]
    received = smtp.received()
    assert _to(received)["approvers@acme.test"] == len(pending)
    replies = [m for m in received if m["To"] != "approvers@acme.test"]
    assert len(replies) == states[("CLOSED", "no_discrepancy")] >= 1
    for ticket in pending:  # each told once, with its amount and customer
        [notice] = [m for m in received if f"T-{ticket.id:06d} " in str(m["Subject"])]
        assert ticket.sender in notice.get_content()
    with temporary_settings({PREFECT_UI_URL: UI}):
        again = await reconcile_inbox(mailbox=True, approval_wait_s=0)
    assert again == [] and tickets.count(deps.sessions) == emails
    assert len(smtp.received()) == len(received)
