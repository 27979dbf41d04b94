"""`billing-recon process --imap` and `mail send`: the mailbox of a real IMAP server (dovecot)
through the command line, and the replies and notices through a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_recon.store.sample_data import SampleSet
from tests.e2e.conftest import Cli
from tests.mail import smtp_server
from tests.mail.certs import Certs
from tests.mail.conftest import certs, imap_env, imap_server, smtp_env  # noqa: F401
from tests.mail.dovecot import Dovecot, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def smtp(certs: Certs, tmp_path: Path) -> Iterator[smtp_server.SmtpServer]:  # noqa: F811
    """aiosmtpd over implicit TLS."""
    server = smtp_server.start(free_port(), certs, tmp_path / "received", "tls")
    yield server
    server.stop()


def test_process_imap_takes_the_mailbox_and_mail_send_sends_each_reply_once(
        cli: Cli, sample: SampleSet, imap_server: Dovecot, certs: Certs,  # noqa: F811
        smtp: smtp_server.SmtpServer) -> None:
    cli.env.update({**imap_env(imap_server, certs), **smtp_env(smtp, certs, "tls")})
    paths = sorted(sample.inbox_dir.glob("*.eml"))[:4]
    for path in paths:
        imap_server.deliver(path.read_bytes(), path.stem)
    done = cli.run("process", "--imap", "--json", "--wait", "0")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == len(paths)
    assert all(line["email"].startswith("imap://") for line in lines)
    pending = [line for line in lines if line["state"] == "APPROVAL_PENDING"]
    assert pending and len(smtp.received()) == len(pending)  # each approver notice, once
    again = cli.run("process", "--imap", "--json", "--wait", "0")
    assert (again.returncode, again.stdout) == (0, "")  # nothing new in the mailbox
    sent = cli.json("mail", "send")
    assert sent["sent"] == [] and len(smtp.received()) == len(pending)
    rows = cli.json("mail", "list")
    assert {row["status"] for row in rows} == {"sent"} and len(rows) == len(pending)
