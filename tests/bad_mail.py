"""The bad-mail corpus (tests/corpus/bad_mail): its files and their expected outcomes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).parent / "corpus" / "bad_mail"
#: file name -> {"state", "reason", "problem" | "sender", "flagged", "after"} (see its README).
OUTCOMES: dict[str, dict[str, Any]] = json.loads((CORPUS / "outcomes.json").read_text())
#: Reasons of emails refused as they arrive (recorded with the file and the problem).
INTAKE = {"email_too_large", "unreadable_email", "invalid_sender"}


def corpus() -> list[tuple[str, bytes, dict[str, Any]]]:
    """(name, bytes, expected outcome) of every corpus email, in batch order."""
    return [(name, (CORPUS / name).read_bytes(), expected)
            for name, expected in OUTCOMES.items()]


def oversized_email(folder: Path, size: int, name: str = "oversized.eml") -> Path:
    """A well-formed email of ``size`` bytes, sparse on disk (its body is NUL bytes)."""
    path = folder / name
    with path.open("wb") as handle:
        handle.write(b"From: Ann <ann@example.com>\r\nSubject: INV-000001 attachments\r\n"
                     b"Message-ID: <oversized@bad-mail.test>\r\n\r\nINV-000001\r\n")
        handle.truncate(size)
    return path
