"""Inbound email parsing: identity (Message-ID or SHA-256), sender, subject and text body."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr

from billing_recon.errors import EmailParseError


@dataclass(frozen=True)
class InboundEmail:
    """An email reduced to what the pipeline needs; ``raw`` is kept verbatim."""

    email_id: str
    sender: str
    subject: str
    body: str
    raw: bytes


def email_identity(raw: bytes, message_id: str | None) -> str:
    """SPEC §5: the Message-ID without angle brackets, else the SHA-256 of the bytes."""
    if message_id and message_id.strip().strip("<>").strip():
        return message_id.strip().strip("<>").strip()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _text_body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        return str(part.get_content())
    except (LookupError, UnicodeDecodeError) as exc:
        raise EmailParseError(f"cannot decode the email body: {exc}") from exc


def parse_email(raw: bytes) -> InboundEmail:
    """Parse RFC 5322 bytes; the sender is trimmed and lower-cased."""
    if not raw.strip():
        raise EmailParseError("the email is empty")
    msg = message_from_bytes(raw, policy=policy.default)
    if not isinstance(msg, EmailMessage):  # pragma: no cover - policy.default guarantees it
        raise EmailParseError("not an RFC 5322 message")
    _name, address = parseaddr(str(msg.get("From", "")))
    return InboundEmail(
        email_id=email_identity(raw, msg.get("Message-ID")),
        sender=address.strip().lower(),
        subject=str(msg.get("Subject", "")),
        body=_text_body(msg),
        raw=raw,
    )
