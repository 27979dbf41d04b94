"""The mailbox: an IMAP4 folder read over TLS (or STARTTLS) with stdlib ``imaplib``.

Messages are found by the absence of our keyword (``ImapSettings.keyword``), which is set only
after their tickets are committed; they are never deleted or moved. UIDs are used within one
session only, so a UIDVALIDITY change between sessions cannot make us flag the wrong message.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from billing_recon.config.mail import ImapSettings
from billing_recon.errors import MailUnavailable, UserInputError
from billing_recon.mail.tls import context

_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


@dataclass(frozen=True)
class Message:
    """One message of the folder: its UID and size, and its bytes (``raw``), or, when it is
    above the size limit, only its header (``raw`` is None: never downloaded)."""

    uid: int
    size: int
    raw: bytes | None
    header: bytes = b""


def _check(result: tuple[str, Any], what: str) -> list[Any]:
    status, data = result
    if status != "OK":
        raise MailUnavailable(f"IMAP {what} failed: {data!r}")
    return list(data)


class Mailbox:
    """A logged-in IMAP session on one folder, selected read-write (a context manager)."""

    def __init__(self, settings: ImapSettings) -> None:
        if not settings.host:
            raise UserInputError("no IMAP server is configured (BILLING_RECON_IMAP_HOST)")
        self.settings = settings
        self.uidvalidity = 0
        self._imap: imaplib.IMAP4 | None = None

    @property
    def url(self) -> str:
        """The folder as an IMAP URL (RFC 5092), without the password."""
        s = self.settings
        return f"imap://{s.user}@{s.host}:{s.port}/{s.folder}"

    def source(self, uid: int) -> str:
        """Where one message is: recorded as the ticket's source."""
        return f"{self.url};UIDVALIDITY={self.uidvalidity}/;UID={uid}"

    def __enter__(self) -> Self:
        s = self.settings
        ctx = context(s.ca_file)
        try:
            if s.security == "tls":
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(s.host or "", s.port, ssl_context=ctx,
                                                        timeout=s.timeout_s)
            else:
                imap = imaplib.IMAP4(s.host or "", s.port, timeout=s.timeout_s)
                imap.starttls(ctx)
            self._imap = imap
            password = s.password.get_secret_value() if s.password else ""
            _check(imap.login(s.user, password), "login")
            _check(imap.select(_quoted(s.folder)), f"select {s.folder}")
            _, values = imap.response("UIDVALIDITY")
            if not values or values[0] is None:
                raise MailUnavailable(f"IMAP {self.url}: the server sent no UIDVALIDITY")
            self.uidvalidity = int(values[-1])
        except (OSError, imaplib.IMAP4.error, ValueError, TypeError) as exc:
            self.close()
            raise MailUnavailable(f"IMAP {self.url}: {exc}") from exc
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Log out (best effort: the server forgets the session anyway)."""
        imap, self._imap = self._imap, None
        if imap is not None:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                imap.logout()

    def _uid(self, *args: str) -> list[Any]:
        assert self._imap is not None, "use the mailbox as a context manager"
        try:
            return _check(self._imap.uid(*args), f"UID {args[0]}")
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailUnavailable(f"IMAP {self.url}: {exc}") from exc

    def untaken(self) -> list[int]:
        """UIDs of the messages without our keyword, oldest first."""
        data = self._uid("SEARCH", "UNKEYWORD", self.settings.keyword)
        return sorted(int(uid) for uid in bytes(data[0] or b"").split())

    def sizes(self, uids: list[int]) -> dict[int, int]:
        """Each message's size in bytes (messages expunged meanwhile are missing)."""
        found: dict[int, int] = {}
        for item in self._uid("FETCH", _set(uids), "(UID RFC822.SIZE)"):
            line = item[0] if isinstance(item, tuple) else item
            uid, size = _UID.search(bytes(line)), _SIZE.search(bytes(line))
            if uid and size:
                found[int(uid.group(1))] = int(size.group(1))
        return found

    def fetch(self, uids: list[int], part: str) -> dict[int, bytes]:
        """``BODY.PEEK[part]`` of each message (PEEK: \\Seen is left as it was)."""
        found: dict[int, bytes] = {}
        for item in self._uid("FETCH", _set(uids), f"(UID BODY.PEEK[{part}])"):
            if isinstance(item, tuple) and len(item) == 2:
                uid = _UID.search(bytes(item[0]))
                if uid:
                    found[int(uid.group(1))] = bytes(item[1])
        return found

    def messages(self, uids: list[int], max_bytes: int) -> Iterator[Message]:
        """The messages of ``uids`` (one UID range of the batch): those within ``max_bytes``
        with their bytes, larger ones with their header only."""
        sizes = self.sizes(uids)
        small = [uid for uid in uids if uid in sizes and sizes[uid] <= max_bytes]
        large = [uid for uid in uids if uid in sizes and sizes[uid] > max_bytes]
        bodies = self.fetch(small, "") if small else {}
        headers = self.fetch(large, "HEADER") if large else {}
        for uid in uids:
            if uid in bodies:
                yield Message(uid, sizes[uid], bodies[uid])
            elif uid in headers:
                yield Message(uid, sizes[uid], None, headers[uid])

    def mark_taken(self, uids: list[int]) -> None:
        """Set our keyword on these messages: their tickets are committed."""
        if uids:
            self._uid("STORE", _set(uids), "+FLAGS.SILENT", f"({self.settings.keyword})")


def _set(uids: list[int]) -> str:
    return ",".join(map(str, uids))


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
