"""Who sent an email: the addr-spec of its one From mailbox, never its display name.

The sender decides whose invoices an email may touch (SPEC §5), so it is read with the email
package's address objects and only the addr-spec counts. A From header the parser finds invalid
(``ap@acme.test <evil@x.test>`` parses as ``ap@acme.test``), an RFC 2047 encoded word that
decodes to an address (a display name, not an address), several mailboxes or an over-long
address give no sender at all: the email is refused, not attributed to anyone.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email import errors
from email.message import EmailMessage

from billing_recon.domain.text import clean_text

#: RFC 5321's limit on a mailbox; it also bounds the tickets.sender column (320).
MAX_ADDRESS = 254
#: A display name naming an address other than the sender's (``"ap@acme.test" <evil@x.test>``).
DISPLAY_NAME_IS_ANOTHER_ADDRESS = "display_name_is_another_address"
_ADDRESS_LIKE = re.compile(r"[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+")


@dataclass(frozen=True)
class Sender:
    """The normalised addr-spec (trimmed, lower-case), or the problem that leaves none."""

    address: str
    display_name: str = ""
    problem: str | None = None
    flags: tuple[str, ...] = ()


def _refused(problem: str) -> Sender:
    return Sender(address="", problem=problem)


def _other_addresses(display_name: str, address: str) -> bool:
    """Whether the display name holds something address-like that is not the sender's own.

    NFKC first, so a fullwidth at sign (U+FF20) counts as the ``@`` it looks like.
    """
    shown = unicodedata.normalize("NFKC", display_name).lower()
    return any(found != address for found in _ADDRESS_LIKE.findall(shown))


def _as_written(msg: EmailMessage) -> str:
    """The From header's value as the email has it (unfolded, bounded), for messages."""
    value = next((v for k, v in msg.raw_items() if k.lower() == "from"), "")
    return " ".join(clean_text(str(value)).split())[:200]


def parse_sender(msg: EmailMessage) -> Sender:
    """The sender of ``msg`` (see the module docstring for what has none)."""
    fields = msg.get_all("From") or []
    if len(fields) != 1:
        return _refused("no From header" if not fields else f"{len(fields)} From headers")
    header = fields[0]
    shown = _as_written(msg)
    if any(isinstance(d, errors.InvalidHeaderDefect) for d in header.defects):
        return _refused(f"the From header {shown!r} is not a valid mailbox")
    mailboxes = header.addresses
    if len(mailboxes) != 1:
        return _refused(f"the From header {shown!r} holds {len(mailboxes)} mailboxes, not one")
    mailbox = mailboxes[0]
    if not mailbox.username or not mailbox.domain:
        return _refused(f"the From header {shown!r} holds no address")
    address = clean_text(mailbox.addr_spec).strip().lower()
    if len(address) > MAX_ADDRESS:
        return _refused(f"the From address is {len(address)} characters long, above "
                        f"{MAX_ADDRESS}")
    if "\ufffd" in address or not address.isprintable():
        return _refused(f"the From address {address!r} holds undecodable or control characters")
    display = clean_text(mailbox.display_name)
    flags = (DISPLAY_NAME_IS_ANOTHER_ADDRESS,) if _other_addresses(display, address) else ()
    return Sender(address=address, display_name=display, flags=flags)
