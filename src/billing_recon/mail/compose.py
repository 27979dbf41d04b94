"""The messages we send: a reply in the customer's thread, and a notice to approvers.

Each message's Message-ID is derived from its outbox key (the ticket key for a reply), so a
copy found anywhere (the customer's inbox, a Sent folder, a server log) names the ticket, and
every attempt to send it sends the very same message.
"""

from __future__ import annotations

import hashlib
import re
from email.message import EmailMessage
from email.utils import formatdate

_RE = re.compile(r"^\s*(re|aw|sv)\s*:\s*", re.IGNORECASE)
_MSGID = re.compile(r"<[^<>\s]+>")


def domain_of(address: str) -> str:
    """The domain the Message-IDs end with (that of the From address)."""
    return address.rpartition("@")[2] or "localhost"


def message_id(key: str, sender: str) -> str:
    """``<key@domain>`` with the key reduced to characters a Message-ID may hold."""
    local = re.sub(r"[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]", ".", key)
    if len(local) > 120:
        local = local[:80] + "." + hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<{local}@{domain_of(sender)}>"


def reply_subject(subject: str) -> str:
    """``Re: subject`` (one Re:, whatever the customer's client wrote)."""
    bare = subject
    while _RE.match(bare):
        bare = _RE.sub("", bare, count=1)
    return f"Re: {bare}".strip() if bare else "Re: your billing question"


def references(original_references: str, original_id: str | None) -> str:
    """The References of a reply: the original's (ids only), then the original itself."""
    ids = _MSGID.findall(original_references or "")
    if original_id:
        ids.append(f"<{original_id}>")
    return " ".join(dict.fromkeys(ids[-20:]))  # bounded; order kept, duplicates dropped


def reply(*, key: str, sender: str, to: str, subject: str, body: str,
          original_id: str | None, original_references: str) -> EmailMessage:
    """The customer's reply, threaded under their email (RFC 5322 3.6.4), marked as an
    automatic reply (RFC 3834) so auto-responders do not answer it."""
    msg = _base(key, sender, [to], reply_subject(subject), body)
    if original_id:
        msg["In-Reply-To"] = f"<{original_id}>"
    refs = references(original_references, original_id)
    if refs:
        msg["References"] = refs
    msg["Auto-Submitted"] = "auto-replied"
    return msg


def notice(*, key: str, sender: str, to: list[str], subject: str, body: str) -> EmailMessage:
    """A notice to approvers."""
    msg = _base(key, sender, to, subject, body)
    msg["Auto-Submitted"] = "auto-generated"
    return msg


def _base(key: str, sender: str, to: list[str], subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id(key, sender)
    msg.set_content(body)
    return msg
