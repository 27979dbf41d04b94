"""Email addresses compared as the mailbox they reach: the one place for that concept.

Separation of duties and lookups in the approver registry ask whether two addresses are the
same person's. Mail providers deliver ``Carol+refunds@Example.com`` to ``carol@example.com``:
case and a ``+tag`` on the local part do not make another person, so both are dropped before
any comparison. The domain is kept as it is (lower-cased): other domains are other mailboxes.
"""

from __future__ import annotations


def normalise_email(address: str) -> str:
    """The mailbox ``address`` reaches: trimmed, lower-case, the local part without ``+tag``."""
    text = address.strip().lower()
    local, at, domain = text.rpartition("@")
    if not at:
        return text
    return f"{local.split('+', 1)[0] or local}@{domain}"


def same_mailbox(first: str, second: str) -> bool:
    """Whether two addresses reach the same mailbox (see ``normalise_email``)."""
    return normalise_email(first) == normalise_email(second)
