"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.sandbox_support import NO_USERNS


@pytest.fixture
def blocked_bwrap(tmp_path: Path) -> str:
    """A bwrap that fails the way it does where user namespaces are blocked."""
    path = tmp_path / "bwrap"
    path.write_text(f"#!/bin/sh\necho '{NO_USERNS}' >&2\nexit 1\n")
    path.chmod(0o755)
    return str(path)
