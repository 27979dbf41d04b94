"""The core pipeline called directly (no Prefect) settles every sample email as the truth says."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billing_recon import pipeline, runtime
from billing_recon.ground_truth import matches
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.sample_data import generate


@pytest.fixture
def sample_world(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[tuple[Deps, Path, dict[str, Any]]]:
    """The sample data loaded into a fresh database (SQLite and PostgreSQL)."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BILLING_RECON_LLM", raising=False)
    runtime.reset()
    sample = generate(tmp_path / "sample", seed=7)
    deps = runtime.build()
    load_directory(deps.sessions, sample.data_dir)
    yield deps, sample.inbox_dir, sample.ground_truth
    runtime.reset()


def test_every_sample_email_settles_as_its_ground_truth_says(
        sample_world: tuple[Deps, Path, dict[str, Any]]) -> None:
    deps, inbox, truth = sample_world
    for path in sorted(inbox.glob("*.eml")):
        ticket = pipeline.process_email(deps, path.read_bytes(), str(path))
        assert matches(truth[path.name], ticket), (path.name, ticket.state, ticket.reason)
    assert tickets.count(deps.sessions) == len(truth)


def test_an_email_seen_before_resumes_its_settled_ticket_without_new_work(
        sample_world: tuple[Deps, Path, dict[str, Any]]) -> None:
    deps, inbox, _ = sample_world
    path = sorted(inbox.glob("*.eml"))[0]
    first = pipeline.process_email(deps, path.read_bytes(), str(path))
    logged = len(tickets.events(deps.sessions, first.id))
    again = pipeline.process_email(deps, path.read_bytes(), str(path))
    assert (again.id, again.state) == (first.id, "APPROVAL_PENDING")
    assert len(tickets.events(deps.sessions, first.id)) == logged


def test_the_core_pipeline_does_not_import_prefect() -> None:
    code = "import sys, billing_recon.pipeline; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
