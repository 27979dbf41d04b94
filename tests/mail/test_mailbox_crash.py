"""Crashes of the real commands (SIGKILL at the crash-point switches): between committing the
tickets and marking their messages on the IMAP server, and between the outbox claim or the
SMTP DATA and the outbox's commit. After re-runs every email is one ticket and every reply
arrived at the SMTP server once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from billing_recon import pipeline
from billing_recon.mail.imap import Mailbox
from billing_recon.steps import outbox as mail_outbox
from billing_recon.steps.deps import Deps
from billing_recon.store import outbox, tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.sample_data import generate
from tests.mail.certs import Certs
from tests.mail.conftest import imap_env, smtp_env, use
from tests.mail.dovecot import Dovecot
from tests.mail.smtp_server import SmtpServer
from tests.mail.test_imap_mailbox import plain

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 1.0


def cli(env: dict[str, str], *args: str, kill_at: str = "") -> subprocess.CompletedProcess[str]:
    """Run `billing-recon ARGS` in its own process, a crash point armed when given."""
    full = {**os.environ, **env, "BILLING_RECON_CHAOS_KILL_AT": kill_at}
    return subprocess.run([sys.executable, "-m", "billing_recon_cli", *args], env=full,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def _env(deps: Deps, extra: dict[str, str]) -> dict[str, str]:
    return {"BILLING_RECON_DATABASE_URL": deps.settings.database.sqlalchemy_url,
            "BILLING_RECON_HOME": str(deps.settings.home), "BILLING_RECON_LLM": "offline",
            **extra}


def test_mailbox_crash_between_commit_and_flag_finds_every_email_once(
        mail_deps: Deps, imap_server: Dovecot, certs: Certs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    imap = {**imap_env(imap_server, certs), "BILLING_RECON_IMAP_BATCH_SIZE": "100"}
    deps = use(monkeypatch, imap)
    for n in range(250):
        imap_server.deliver(plain(n), f"c{n}")
    env = _env(deps, imap)
    killed = cli(env, "mail", "fetch", "--json", kill_at="mailbox.before_flag:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert tickets.count(deps.sessions) == 200  # two ranges committed...
    with Mailbox(deps.settings.imap) as box:
        assert len(box.untaken()) == 150  # ...the second one never marked
    again = cli(env, "mail", "fetch", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (len(report["known"]), len(report["opened"])) == (100, 50)
    assert tickets.count(deps.sessions) == 250
    with deps.sessions() as session:
        from billing_recon.store.models import Ticket

        ids = Counter(t.email_id for t in session.query(Ticket))
    assert len(ids) == 250 and set(ids.values()) == {1}
    with Mailbox(deps.settings.imap) as box:
        assert box.untaken() == []


@pytest.fixture
def replies_owed(mail_deps: Deps, smtp: SmtpServer, certs: Certs, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[Deps, dict[str, str], list[str]]:
    """The sample inbox settled, its replies and notices queued (not sent)."""
    env = {**smtp_env(smtp, certs, smtp.mode),
           "BILLING_RECON_SMTP_LEASE_S": str(LEASE_S)}
    deps = use(monkeypatch, env)
    sample = generate(tmp_path / "sample", seed=7)
    load_directory(deps.sessions, sample.data_dir)
    for path in sorted(sample.inbox_dir.glob("*.eml")):
        pipeline.process_email(deps, path.read_bytes(), str(path))
    queued = mail_outbox.queue_due(deps)
    assert len(queued) >= 5
    return deps, _env(deps, env), queued


def _arrived(smtp: SmtpServer) -> Counter[str]:
    return Counter(str(m["Message-ID"]) for m in smtp.received())


def _after_lease() -> None:
    time.sleep(LEASE_S + 0.5)  # a dead sender's claim is trusted this long, no longer


def test_reply_once_after_a_crash_between_the_outbox_claim_and_the_smtp_send(
        replies_owed: tuple[Deps, dict[str, str], list[str]], smtp: SmtpServer) -> None:
    deps, env, queued = replies_owed
    killed = cli(env, "mail", "send", "--json", kill_at="outbox.before_send:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sum(_arrived(smtp).values()) == 2  # the third was claimed, never sent
    statuses = Counter(r.status for r in outbox.rows(deps.sessions))
    assert statuses == {"sent": 2, "claimed": 1, "queued": len(queued) - 3}
    _after_lease()
    again = cli(env, "mail", "send", "--json")
    assert again.returncode == 0, again.stderr
    arrived = _arrived(smtp)
    assert len(arrived) == len(queued) and set(arrived.values()) == {1}
    assert {r.message_id for r in outbox.rows(deps.sessions)} == set(arrived)
    assert {r.status for r in outbox.rows(deps.sessions)} == {"sent"}


def test_reply_once_after_a_crash_between_smtp_data_and_the_outbox_commit(
        replies_owed: tuple[Deps, dict[str, str], list[str]], smtp: SmtpServer) -> None:
    deps, env, queued = replies_owed
    killed = cli(env, "mail", "send", "--json", kill_at="outbox.after_send:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [first] = _arrived(smtp)  # accepted by the server, not recorded as sent
    [row] = [r for r in outbox.rows(deps.sessions) if r.message_id == first]
    assert row.status == "sending"
    _after_lease()
    again = cli(env, "mail", "send", "--json")
    assert again.returncode == 1, again.stderr  # one message uncertain: said so, exit 1
    assert json.loads(again.stdout)["uncertain"] == [row.key]
    arrived = _arrived(smtp)
    assert len(arrived) == len(queued) and set(arrived.values()) == {1}  # never twice
    statuses = {r.key: r.status for r in outbox.rows(deps.sessions)}
    assert statuses.pop(row.key) == "uncertain" and set(statuses.values()) == {"sent"}
    assert tickets.events(deps.sessions, row.ticket_id, "mail_uncertain")
    third = cli(env, "mail", "send", "--json")  # uncertain stays uncertain: not sent again
    assert json.loads(third.stdout)["sent"] == [] and _arrived(smtp) == arrived
