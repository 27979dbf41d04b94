"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_recon import runtime
from tests.integration.gate_support import Gate
from tests.integration.sandbox_support import NO_USERNS


@pytest.fixture
def blocked_bwrap(tmp_path: Path) -> str:
    """A bwrap that fails the way it does where user namespaces are blocked."""
    path = tmp_path / "bwrap"
    path.write_text(f"#!/bin/sh\necho '{NO_USERNS}' >&2\nexit 1\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def gate(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    """Deps on the migrated database, their own key files and an embedded gateway."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BILLING_RECON_GATEWAY_DB", f"sqlite:///{tmp_path}/gateway.db")
    for name in ("BILLING_RECON_GATEWAY_URL", "BILLING_RECON_LLM", "BILLING_RECON_FOUR_EYES",
                 "BILLING_RECON_REQUIRE_CODE", "BILLING_RECON_APPROVER_KEY",
                 "BILLING_RECON_APPROVERS", "BILLING_RECON_MAX_WRONG_CODES",
                 "BILLING_RECON_WRONG_CODE_WINDOW_S"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()
    yield Gate(runtime.build())
    runtime.reset()
