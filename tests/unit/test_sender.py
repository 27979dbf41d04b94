"""Issue 14: the sender is the From header's one addr-spec, never its display name."""

from __future__ import annotations

import pytest

from billing_recon.domain.email import parse_email
from billing_recon.domain.fsm import Reason
from billing_recon.domain.sender import DISPLAY_NAME_IS_ANOTHER_ADDRESS


def _email(sender: bytes) -> bytes:
    return b"From: " + sender + b"\r\nSubject: INV-000001\r\nMessage-ID: <m@x>\r\n\r\nhi\r\n"


@pytest.mark.parametrize(("sender", "address"), [
    (b'"ap@acme.test" <evil@x.test>', "evil@x.test"),
    (b"=?utf-8?q?ap=40acme=2Etest?= <evil@x.test>", "evil@x.test"),
    (b"=?utf-8?q?=22ap=40acme=2Etest=22_=3Cap=40acme=2Etest=3E?= <evil@x.test>", "evil@x.test"),
    (b"Ann <ANN@Example.COM>", "ann@example.com"),
    (b"  ann@example.com  ", "ann@example.com"),
    (b"J\xe9r\xf4me <ann@example.com>", "ann@example.com"),
    (b'"Doe, Ann" <ann@example.com> (billing)', "ann@example.com"),
    ("J\u00f6rg <j\u00f6rg@example.com>".encode(), "j\u00f6rg@example.com"),
])
def test_sender_is_the_addr_spec_never_the_display_name(sender: bytes, address: str) -> None:
    email = parse_email(_email(sender))
    assert (email.sender, email.rejection) == (address, None)


@pytest.mark.parametrize(("sender", "problem"), [
    (b"ap@acme.test <evil@x.test>", "is not a valid mailbox"),
    (b'"evil@x.test" ap@acme.test', "is not a valid mailbox"),
    (b"=?utf-8?q?ap=40acme=2Etest?=", "is not a valid mailbox"),
    (b"=?utf-8?b?YXBAYWNtZS50ZXN0?=", "is not a valid mailbox"),
    (b"ap@acme.test, evil@x.test", "holds 2 mailboxes"),
    (b"undisclosed-recipients:;", "holds 0 mailboxes"),
    (b"a" * 300 + b"@acme.test", "characters long"),
    (b"ap@acme.test\x00", "control characters"),
    (b"J <j\xf6rg@acme.test>", "undecodable"),
])
def test_sender_refused_when_the_from_header_names_no_single_address(sender: bytes,
                                                                      problem: str) -> None:
    email = parse_email(_email(sender))
    assert email.sender == ""
    assert email.rejection is not None and email.rejection.reason is Reason.INVALID_SENDER
    assert problem in email.rejection.problem


def test_sender_refused_without_exactly_one_from_header() -> None:
    none = parse_email(b"Subject: x\r\nMessage-ID: <m@x>\r\n\r\nhi\r\n")
    two = parse_email(b"From: a@x.test\r\nFrom: b@x.test\r\nMessage-ID: <m@x>\r\n\r\nhi\r\n")
    assert [(e.rejection.reason, e.rejection.problem) for e in (none, two) if e.rejection] == [
        (Reason.INVALID_SENDER, "no From header"), (Reason.INVALID_SENDER, "2 From headers")]


@pytest.mark.parametrize(("sender", "flagged"), [
    (b'"ap@acme.test" <evil@x.test>', True),
    (b"=?utf-8?q?ap=40acme=2Etest?= <evil@x.test>", True),
    ('"ap\uff20acme.test" <evil@x.test>'.encode(), True),  # a fullwidth at sign
    (b'"Ann (ann@example.com)" <ann@example.com>', False),
    (b'"ANN@example.com" <ann@example.com>', False),
    (b"Ann Smith <ann@example.com>", False),
])
def test_sender_display_name_that_looks_like_another_address_is_flagged(
        sender: bytes, flagged: bool) -> None:
    email = parse_email(_email(sender))
    assert (DISPLAY_NAME_IS_ANOTHER_ADDRESS in email.sender_flags) is flagged
    assert email.rejection is None


def test_sender_is_part_of_the_identity_beside_the_message_id() -> None:
    ann = parse_email(_email(b"ann@example.com")).identity
    bob = parse_email(_email(b"bob@example.com")).identity
    assert ann.email_id == bob.email_id == "m@x"  # as before issue 14: old tickets are found
    assert (ann.sender_id, bob.sender_id) == ("m@x|ann@example.com", "m@x|bob@example.com")
