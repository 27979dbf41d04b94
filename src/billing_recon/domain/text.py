"""Text taken from an email, made safe for every database column and every prompt."""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with no lone surrogate and no NUL, which neither SQLite's nor PostgreSQL's
    text columns accept (``UnicodeEncodeError``, ``DataError``).

    The email package keeps undecodable header bytes as surrogates: they are read as the UTF-8
    they usually are, else each becomes U+FFFD; so does a NUL.
    """
    if _SURROGATE.search(text):
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8")
        except UnicodeError:
            text = _SURROGATE.sub("\ufffd", text)
    return text.replace("\x00", "\ufffd")
