"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Numeric, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp stored as UTC; naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"timestamps must be timezone-aware: {value!r}")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """An exact decimal amount; SQLite keeps it as text so no float ever appears."""

    impl = Numeric(18, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(18, 4, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(str(value))


class EmailBytes(TypeDecorator[bytes]):
    """An email's bytes, exactly, in a text column (no schema change from the text it was).

    Bytes that are text both databases take (UTF-8 without NUL) are stored as that text, as
    before; other bytes (Latin-1 headers, binary garbage, a NUL) as base64 behind ``MARK``,
    which valid header text cannot start with. Text given instead of bytes is its UTF-8.
    """

    impl = Text
    cache_ok = True
    MARK = "\x01base64:"

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = self.MARK  # not text: stored as base64 below
        if "\x00" in text or text.startswith(self.MARK):
            return self.MARK + base64.b64encode(raw).decode("ascii")
        return text

    def process_result_value(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        if value.startswith(self.MARK):
            return base64.b64decode(value[len(self.MARK):])
        return str(value).encode("utf-8")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)
