"""take_mailbox: every new message of the IMAP folder becomes exactly one ticket.

The same intake as a folder's .eml files (``steps.intake``: size limit, parsing that never
raises, one ticket per email identity). Per UID range of the folder: fetch, commit every
message's ticket (or recorded rejection), then set our keyword on the range. A crash between
the commit and the keyword leaves the range unmarked: the next batch reads it again and finds
each ticket by the email's identity (its Message-ID and sender, or its bytes), so none is
opened twice and none lost. Nothing is deleted or moved on the server.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from billing_recon.domain.email import InboundEmail as ParsedEmail
from billing_recon.domain.email import oversized
from billing_recon.mail.imap import Mailbox, Message
from billing_recon.steps.deps import Deps
from billing_recon.steps.intake import email_of
from billing_recon.store import inbox

log = logging.getLogger(__name__)
#: Bytes fetched in one UID range at most (besides ``ImapSettings.batch_size`` messages).
RANGE_BYTES = 64 * 1024 * 1024

Progress = Callable[[int, int], None]


@dataclass
class MailboxReport:
    """What one pass over the folder did."""

    folder: str
    uidvalidity: int
    uidvalidity_was: int | None = None
    seen: int = 0
    opened: list[int] = field(default_factory=list)  # tickets created, in arrival order
    known: list[int] = field(default_factory=list)  # tickets found again (read before)
    rejected: list[int] = field(default_factory=list)  # of opened: refused at intake

    @property
    def tickets(self) -> list[int]:
        """Every ticket of this pass, new or found again, in arrival order."""
        return [*self.known, *self.opened]


def _ranges(box: Mailbox, uids: list[int], limit: int) -> Iterator[list[int]]:
    """UID ranges of at most ``batch_size`` messages and about ``RANGE_BYTES`` bytes."""
    step = box.settings.batch_size
    for start in range(0, len(uids), step):
        chunk, sizes = uids[start:start + step], box.sizes(uids[start:start + step])
        part: list[int] = []
        total = 0
        for uid in chunk:
            size = min(sizes.get(uid, 0), limit)
            if part and total + size > RANGE_BYTES:
                yield part
                part, total = [], 0
            part.append(uid)
            total += size
        if part:
            yield part


def _email(box: Mailbox, message: Message, limit: int) -> tuple[ParsedEmail, str]:
    source = box.source(message.uid)
    if message.raw is not None:
        return email_of(message.raw, limit), source
    # Above the limit: never downloaded. Identified by its header and size (stable across
    # passes, as a file's SHA-256 is); its bytes stay on the server, named by ``source``.
    digest = hashlib.sha256(message.header + str(message.size).encode()).hexdigest()
    return oversized(digest, message.size, limit), source


def take_mailbox(deps: Deps, progress: Progress | None = None) -> MailboxReport:
    """Open a ticket for every message of the folder without our keyword, then mark it."""
    settings, limit = deps.settings.imap, deps.settings.intake.max_email_bytes
    with Mailbox(settings) as box:
        report = MailboxReport(box.url, box.uidvalidity)
        report.uidvalidity_was = inbox.see_uidvalidity(deps.sessions, box.url,
                                                       box.uidvalidity)
        if report.uidvalidity_was is not None:
            log.warning("%s: UIDVALIDITY changed from %s to %s; UIDs are never kept between "
                        "passes, and messages read before are found by their identity",
                        box.url, report.uidvalidity_was, box.uidvalidity)
        uids = box.untaken()
        for part in _ranges(box, uids, limit):
            _take(deps, box, part, limit, report)
            if progress is not None:
                progress(report.seen, len(uids))
    return report


def _take(deps: Deps, box: Mailbox, uids: list[int], limit: int,
          report: MailboxReport) -> None:
    for message in box.messages(uids, limit):
        email, source = _email(box, message, limit)
        opened = inbox.open_ticket(deps.sessions, email, source)
        report.seen += 1
        (report.opened if opened.created else report.known).append(opened.ticket.id)
        if opened.created and email.rejection is not None:
            report.rejected.append(opened.ticket.id)
    deps.switches.crash_point("mailbox.before_flag")
    box.mark_taken(uids)
