"""The mailbox against a real IMAP server (dovecot on 127.0.0.1): every message becomes exactly
one ticket or one recorded rejection, and is marked only once its ticket is committed."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import pytest

from billing_recon.domain.fsm import Reason, State
from billing_recon.errors import MailUnavailable
from billing_recon.mail.imap import Mailbox
from billing_recon.steps.deps import Deps
from billing_recon.steps.mailbox import take_mailbox
from billing_recon.store import inbox, tickets
from tests.bad_mail import INTAKE, corpus
from tests.mail.certs import Certs
from tests.mail.conftest import imap_env, use
from tests.mail.dovecot import Dovecot


def plain(n: int, **headers: str) -> bytes:
    """A small well-formed email, numbered."""
    head = {"From": f"Customer {n} <c{n}@example.com>", "To": "billing@acme.test",
            "Subject": f"INV-{n:06d} charged twice", "Message-ID": f"<m{n}@example.com>",
            **headers}
    lines = [f"{k}: {v}" for k, v in head.items() if v]
    return ("\r\n".join(lines) + f"\r\n\r\nPlease refund INV-{n:06d}.\r\n").encode()


def _untaken(deps: Deps) -> list[int]:
    with Mailbox(deps.settings.imap) as box:
        return box.untaken()


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_imap_each_message_becomes_one_ticket_and_is_marked_after_commit(
        mail_deps: Deps, imap_server: Dovecot, certs: Certs, security: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    deps = use(monkeypatch, imap_env(imap_server, certs, security))
    for n in range(1, 6):
        imap_server.deliver(plain(n), f"m{n}")
    report = take_mailbox(deps)
    assert len(report.opened) == 5 and report.known == [] and report.seen == 5
    assert tickets.count(deps.sessions) == 5
    assert _untaken(deps) == []  # every message carries our keyword now
    ticket = tickets.get(deps.sessions, report.opened[0])
    assert ticket.email_id == "m1@example.com" and ticket.state == State.RECEIVED.value
    source = tickets.events(deps.sessions, ticket.id)[0].payload["source"]
    assert source.startswith(f"imap://{imap_server.user}@127.0.0.1:") and ";UID=" in source
    imap_server.deliver(plain(6), "m6")
    again = take_mailbox(deps)  # only the new message is read
    assert (again.seen, len(again.opened)) == (1, 1)
    assert tickets.count(deps.sessions) == 6


def _renumber(server: Dovecot) -> None:
    """What a restored or rebuilt mailbox looks like: new UIDVALIDITY, keywords gone."""
    for name in ("dovecot-uidlist", "dovecot-keywords", "dovecot.index", "dovecot.index.log",
                 "dovecot.index.cache"):
        (server.maildir / name).unlink(missing_ok=True)
    for path in (server.maildir / "cur").iterdir():
        path.rename(path.with_name(path.name.split(":2,")[0] + ":2,"))


def test_imap_uidvalidity_change_reads_the_folder_again_without_a_second_ticket(
        mail_deps: Deps, imap_server: Dovecot, certs: Certs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    deps = use(monkeypatch, imap_env(imap_server, certs))
    for n in range(1, 4):
        imap_server.deliver(plain(n), f"m{n}")
    first = take_mailbox(deps)
    _renumber(imap_server)
    second = take_mailbox(deps)
    assert second.uidvalidity_was == first.uidvalidity != second.uidvalidity
    assert second.opened == [] and sorted(second.known) == sorted(first.opened)
    assert tickets.count(deps.sessions) == 3
    assert _untaken(deps) == []


def _bad_mail() -> dict[str, bytes]:
    html = (b"From: Ann <ann@example.com>\r\nSubject: INV-000001\r\nMessage-ID: <html@x.test>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            b"<html><body><p>Refund <b>INV-000001</b> please</p></body></html>\r\n")
    encoded = ("From: =?iso-8859-1?q?Ren=E9e_M=FCller?= <renee@example.com>\r\n"
               "Subject: =?utf-8?b?" + base64.b64encode("Réclamation facture INV-000002 €".encode()
                                                       ).decode() + "?=\r\n"
               "Message-ID: <latin@x.test>\r\nMIME-Version: 1.0\r\n"
               "Content-Type: text/plain; charset=iso-8859-1\r\n"
               "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + \
        "Facturé deux fois: INV-000002.\r\n".encode("latin-1")
    forwarded = (b"From: Bob <bob@example.com>\r\nSubject: Fwd: Re: INV-000003\r\n"
                 b"Message-ID: <fwd@x.test>\r\nReferences: <a@x.test> <b@x.test>\r\n\r\n"
                 b"See below.\r\n\r\n---------- Forwarded message ---------\r\n"
                 b"From: Mallory <mallory@evil.test>\r\nSubject: INV-000003\r\n\r\n"
                 b"> > refund all my invoices to mallory@evil.test\r\n> quoted reply\r\n")
    no_id = b"From: Cy <cy@example.com>\r\nSubject: INV-000004 wrong\r\n\r\nINV-000004\r\n"
    huge = (b"From: Di <di@example.com>\r\nSubject: INV-000005 scans\r\n"
            b"Message-ID: <huge@x.test>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
            b"Content-Type: text/plain\r\n\r\nINV-000005\r\n--XX\r\n"
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(bytes(300_000)).replace(b"\n", b"\r\n") + b"--XX--\r\n")
    return {"html-only": html, "rfc2047-latin1": encoded, "forwarded-quoted": forwarded,
            "no-message-id": no_id, "huge-attachment": huge}


def test_mailbox_bad_mail_becomes_a_ticket_or_a_recorded_rejection_and_the_batch_goes_on(
        mail_deps: Deps, imap_server: Dovecot, certs: Certs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    deps = use(monkeypatch, {**imap_env(imap_server, certs),
                             "BILLING_RECON_INTAKE_MAX_EMAIL_BYTES": "200000"})
    expected: dict[str, str | None] = {}
    for name, raw, outcome in corpus():
        imap_server.deliver(raw, name)
        expected[name] = outcome.get("reason") if outcome.get("reason") in INTAKE else None
    for name, raw in _bad_mail().items():
        imap_server.deliver(raw, name)
        expected[name] = Reason.EMAIL_TOO_LARGE.value if name == "huge-attachment" else None
    imap_server.deliver(plain(99), "good")
    report = take_mailbox(deps)
    assert report.seen == len(expected) + 1 and _untaken(deps) == []
    # one ticket per message (the corpus' reused Message-ID from another sender included)
    assert tickets.count(deps.sessions) == len(expected) + 1
    refused = {}
    for ticket_id in report.opened:
        ticket = tickets.get(deps.sessions, ticket_id)
        if ticket.state == State.REJECTED.value:
            refused[ticket.id] = (ticket.reason, inbox.refusal(deps.sessions, ticket))
    assert sorted(r for r, _ in refused.values()) == sorted(
        r for r in expected.values() if r is not None)
    huge = [p for r, p in refused.values() if r == Reason.EMAIL_TOO_LARGE.value]
    assert len(huge) == 1 and "above the limit of 200000 bytes" in (huge[0] or "")
    assert len(report.rejected) == len(refused)
    # a forwarded thread is the outer sender's: addresses quoted inside never count
    forwarded = [tickets.get(deps.sessions, t) for t in report.opened]
    assert [t.sender for t in forwarded if t.email_id == "fwd@x.test"] == ["bob@example.com"]
    assert [t.subject for t in forwarded if t.email_id == "latin@x.test"] == [
        "Réclamation facture INV-000002 €"]


def test_mailbox_large_message_is_refused_unread_and_stays_on_the_server(
        mail_deps: Deps, imap_server: Dovecot, certs: Certs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    deps = use(monkeypatch, {**imap_env(imap_server, certs),
                             "BILLING_RECON_INTAKE_MAX_EMAIL_BYTES": "200000"})
    raw = _bad_mail()["huge-attachment"]
    imap_server.deliver(raw, "huge")
    first = take_mailbox(deps)
    ticket = tickets.get(deps.sessions, first.opened[0])
    assert (ticket.state, ticket.reason) == ("REJECTED", "email_too_large")
    # only its header and size were fetched: they are its identity, not its bytes
    header = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    assert ticket.email_id == "sha256:" + hashlib.sha256(header + str(len(raw)).encode()
                                                         ).hexdigest()
    assert list((imap_server.maildir / "cur").iterdir())  # kept, marked, never deleted
    _renumber(imap_server)
    assert take_mailbox(deps).opened == []  # identified by its header and size: found again


def test_imap_refuses_a_server_whose_certificate_is_not_trusted(
        mail_deps: Deps, imap_server: Dovecot, certs: Certs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = imap_env(imap_server, certs)
    del env["BILLING_RECON_IMAP_CA_FILE"]
    monkeypatch.delenv("BILLING_RECON_IMAP_CA_FILE", raising=False)
    deps = use(monkeypatch, env)
    imap_server.deliver(plain(1), "m1")
    with pytest.raises(MailUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        take_mailbox(deps)
    assert tickets.count(deps.sessions) == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_mailbox_flood_of_1000_messages_is_taken_in_uid_ranges_with_progress(
        mail_deps: Deps, imap_server: Dovecot, certs: Certs,
        monkeypatch: pytest.MonkeyPatch) -> None:
    deps = use(monkeypatch, {**imap_env(imap_server, certs),
                             "BILLING_RECON_IMAP_BATCH_SIZE": "100"})
    for n in range(1000):
        imap_server.deliver(plain(n), f"f{n}")
    seen: list[tuple[int, int]] = []
    report = take_mailbox(deps, lambda done, total: seen.append((done, total)))
    assert report.seen == 1000 and len(report.opened) == 1000
    assert seen == [(100 * i, 1000) for i in range(1, 11)]
    assert tickets.count(deps.sessions) == 1000 and _untaken(deps) == []
    shutil.rmtree(imap_server.maildir / "tmp", ignore_errors=True)
    Path(imap_server.maildir / "tmp").mkdir()
