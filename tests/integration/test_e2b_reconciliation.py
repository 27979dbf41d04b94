"""Analysis attempts on the E2B backend: what the model is told, and what an attempt costs.

The pipeline is configured as in production (BILLING_RECON_SANDBOX=e2b, the SDK's own E2B_*
variables) with E2B played by the loopback E2B, and the model by the loopback chat server,
reached through the real SDKs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billing_recon import runtime
from billing_recon.agents.schemas import AnalysisOutput
from billing_recon.errors import AnalysisFailed, SandboxUnavailable
from billing_recon.llm.offline import OfflineModel
from billing_recon.steps import reconciliation
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.sample_data import generate
from billing_recon.testing.chat_server import ChatServer
from tests.integration.e2b_loopback import FakeE2B
from tests.integration.ticket_support import fetched_ticket
from tests.llm_server import use_openai

ACTOR = "test"
GOOD = OfflineModel().complete("analysis", [], AnalysisOutput).output.script
BROKEN = "def share(total, people):\n    return total / people\n\nshare(10, 0)\n"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The generated sample data (built once for the module)."""
    return generate(tmp_path_factory.mktemp("sample"), seed=7)


@pytest.fixture
def fake() -> Iterator[FakeE2B]:
    """The loopback E2B."""
    server = FakeE2B().start()
    yield server
    server.stop()


@pytest.fixture
def deps(sample: Any, fake: FakeE2B, chat_server: ChatServer, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Deps]:
    """The sample data in a fresh SQLite database; sandbox E2B (loopback), model over HTTP."""
    use_openai(chat_server, monkeypatch,
               BILLING_RECON_DATABASE_URL=f"sqlite:///{tmp_path}/billing.db",
               BILLING_RECON_HOME=str(tmp_path / "home"), BILLING_RECON_SANDBOX="e2b",
               E2B_API_KEY=fake.api_key, E2B_API_URL=fake.url, E2B_SANDBOX_URL=fake.url)
    built = runtime.build()
    load_directory(built.sessions, sample.data_dir)
    yield built
    runtime.reset()


def _repair_prompts(server: ChatServer) -> list[str]:
    """The 'It failed' turns of every analysis request the model got."""
    return [m["content"] for r in server.requests if r.agent == "analysis"
            for m in r.messages if m["role"] == "user" and m["content"].startswith("It failed")]


def test_e2b_dead_kernel_spends_no_attempt_and_never_reaches_the_model(
        deps: Deps, sample: Any, fake: FakeE2B, chat_server: ChatServer) -> None:
    chat_server.script("analysis", {"script": GOOD})
    ticket_id = fetched_ticket(deps, sample, ACTOR)
    fake.fault = "kernel_dies"

    with pytest.raises(SandboxUnavailable, match="ContextRestarting"):
        reconciliation.analysis_attempt(deps, ticket_id, ACTOR)
    noted = tickets.events(deps.sessions, ticket_id, kind=reconciliation.SANDBOX_UNAVAILABLE)
    assert [e.payload["error"] for e in noted] == [
        "E2B's code interpreter failed the run: ContextRestarting: Context was restarted"]
    assert reconciliation.previous_attempts(deps, ticket_id) == []

    reconciliation.analysis_attempt(deps, ticket_id, ACTOR)
    assert [(a["attempt"], a["ok"]) for a in reconciliation.previous_attempts(deps, ticket_id)
            ] == [(1, True)]
    assert _repair_prompts(chat_server) == []


def test_e2b_script_error_is_an_attempt_and_its_repair_prompt_has_a_plain_traceback(
        deps: Deps, sample: Any, chat_server: ChatServer) -> None:
    chat_server.script("analysis", {"script": BROKEN}, {"script": GOOD})
    ticket_id = fetched_ticket(deps, sample, ACTOR)

    with pytest.raises(AnalysisFailed, match="ZeroDivisionError"):
        reconciliation.analysis_attempt(deps, ticket_id, ACTOR)
    reconciliation.analysis_attempt(deps, ticket_id, ACTOR)

    [prompt] = _repair_prompts(chat_server)
    assert prompt.startswith("It failed:\nTraceback (most recent call last):\n  File \".billing-")
    assert ", line 2, in share\n    return total / people\nZeroDivisionError: division by zero\n" \
        in prompt
    assert "Cell In[" not in prompt and "_billing_recon_run" not in prompt
    assert [a["ok"] for a in reconciliation.previous_attempts(deps, ticket_id)] == [False, True]
