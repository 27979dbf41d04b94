"""Inbound email parsing: identity, sender, subject and text body.

Parsing never raises, whatever the bytes: an email that cannot be used carries its
``rejection`` (a reason code and the problem in words) and is refused at intake as
REJECTED(reason), while the other emails of its batch go on (issue 14).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage

from billing_recon.domain.fsm import Reason
from billing_recon.domain.sender import Sender, parse_sender
from billing_recon.domain.text import clean_text

#: The inbound_emails.email_id column: every identity fits it.
MAX_EMAIL_ID = 300
#: Identity prefixes: the email's bytes, a Message-ID too long to keep, a Message-ID with
#: its sender that does not fit (or cannot be split again).
BYTES_ID, LONG_MESSAGE_ID, LONG_SENDER_ID = "sha256:", "message-id-sha256:", "sender-sha256:"


@dataclass(frozen=True)
class Rejection:
    """Why an email is refused as it arrives, before any model reads it."""

    reason: Reason
    problem: str


@dataclass(frozen=True)
class EmailIdentity:
    """How an email is found again (SPEC §5, with the sender: issue 14).

    ``email_id`` is its Message-ID, as before, or the SHA-256 of its bytes when it has no
    Message-ID or no usable sender. A ticket under the Message-ID is this email's only if its
    sender is this email's too; when another sender's email holds it, this email goes under
    ``sender_id`` (the Message-ID and the sender) instead. None: the bytes identify it.
    """

    email_id: str
    sender_id: str | None
    sender: str


@dataclass(frozen=True)
class InboundEmail:
    """An email reduced to what the pipeline needs; ``raw`` is kept verbatim."""

    identity: EmailIdentity
    subject: str
    body: str
    raw: bytes
    message_id: str | None = None
    display_name: str = ""
    sender_flags: tuple[str, ...] = ()
    rejection: Rejection | None = None

    @property
    def email_id(self) -> str:
        """The email's id (see ``EmailIdentity``)."""
        return self.identity.email_id

    @property
    def sender(self) -> str:
        """The From addr-spec, trimmed and lower-cased; empty when there is none to use."""
        return self.identity.sender


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def email_identity(raw: bytes, message_id: str | None, sender: str) -> EmailIdentity:
    """The identity of an email (see ``EmailIdentity``); every id fits ``MAX_EMAIL_ID``."""
    if not message_id or not sender:
        return EmailIdentity(BYTES_ID + hashlib.sha256(raw).hexdigest(), None, sender)
    email_id = message_id if len(message_id) <= MAX_EMAIL_ID else LONG_MESSAGE_ID + _sha256(
        message_id)
    sender_id = f"{message_id}|{sender}"
    if "|" in sender or len(sender_id) > MAX_EMAIL_ID:  # split at the last "|": unambiguous
        sender_id = LONG_SENDER_ID + _sha256(json.dumps([message_id, sender]))
    return EmailIdentity(email_id, sender_id, sender)


def _message_id(msg: EmailMessage) -> str | None:
    """The Message-ID without angle brackets (as ids were before issue 14), or None."""
    value = clean_text(str(msg.get("Message-ID", ""))).strip().strip("<>").strip()
    return value or None


def _text_body(msg: EmailMessage) -> tuple[str, str | None]:
    """The text body, or why it cannot be read."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return "", None
    try:
        return clean_text(str(part.get_content())), None
    except LookupError:
        return "", f"the body's charset {part.get_content_charset()!r} is unknown"


def unusable(raw: bytes, reason: Reason, problem: str) -> InboundEmail:
    """An email refused as it is, identified by its bytes."""
    return InboundEmail(identity=email_identity(raw, None, ""), subject="", body="", raw=raw,
                        rejection=Rejection(reason, problem))


def oversized(sha256_hex: str, size: int, limit: int) -> InboundEmail:
    """An email above the size limit: refused unread, identified by the SHA-256 of its bytes
    (which the caller streamed), its bytes left where they are."""
    problem = (f"the email is {size} bytes, above the limit of {limit} bytes "
               "(BILLING_RECON_INTAKE_MAX_EMAIL_BYTES)")
    return InboundEmail(identity=EmailIdentity(BYTES_ID + sha256_hex, None, ""), subject="",
                        body="", raw=b"", rejection=Rejection(Reason.EMAIL_TOO_LARGE, problem))


def _rejection(sender: Sender, body_problem: str | None) -> Rejection | None:
    if sender.problem is not None:
        return Rejection(Reason.INVALID_SENDER, sender.problem)
    if body_problem is not None:
        return Rejection(Reason.UNREADABLE_EMAIL, body_problem)
    return None


def _parse(raw: bytes) -> InboundEmail:
    if not raw.strip():
        return unusable(raw, Reason.UNREADABLE_EMAIL, "the email is empty")
    msg = message_from_bytes(raw, policy=policy.default)
    if not isinstance(msg, EmailMessage) or not msg.keys():
        return unusable(raw, Reason.UNREADABLE_EMAIL,
                        "no header fields: not an RFC 5322 message")
    sender = parse_sender(msg)
    message_id = _message_id(msg)
    body, body_problem = _text_body(msg)
    return InboundEmail(identity=email_identity(raw, message_id, sender.address),
                        subject=clean_text(str(msg.get("Subject", ""))), body=body, raw=raw,
                        message_id=message_id, display_name=sender.display_name,
                        sender_flags=sender.flags, rejection=_rejection(sender, body_problem))


def parse_email(raw: bytes) -> InboundEmail:
    """Parse RFC 5322 bytes; whatever they hold, an email comes back (see the module).

    The last few results are kept (the result is immutable): a ticket's email is parsed when
    it is opened and again by triage, which in one process are the same bytes.
    """
    return _parsed(raw) if type(raw) is bytes else _parse_any(raw)


@functools.lru_cache(maxsize=4)
def _parsed(raw: bytes) -> InboundEmail:
    return _parse_any(raw)


def _parse_any(raw: bytes) -> InboundEmail:
    try:
        return _parse(raw)
    except Exception as exc:  # the email package's own failures on hostile input (seen in
        # CPython's header parser): this one email is refused, the batch goes on
        return unusable(raw, Reason.UNREADABLE_EMAIL,
                        clean_text(f"the email cannot be parsed: {type(exc).__name__}: {exc}"))
