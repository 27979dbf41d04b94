"""Redaction of known secret values from text that came out of a sandbox (or a model).

Model-written code may print what it can reach; whatever a sandbox returns is cut to a bound
and stripped of every secret value this process knows before it is stored, logged or put into
a repair prompt. Known values only: an encoded copy (base64, reversed) is not recognised, which
is why such code runs in strong isolation in the first place.
"""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "[redacted]"
#: Shorter values are not treated as secrets: replacing them would mangle ordinary output.
MIN_SECRET_LENGTH = 6


def redact(text: str, secrets: Iterable[str], limit: int | None = None) -> str:
    """``text`` with every known secret replaced (longest first), then its last ``limit``
    characters when a limit is given (redacted before cutting: no secret survives in part)."""
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len,
                         reverse=True):
        text = text.replace(secret, REDACTED)
    return text if limit is None else text[-limit:]
