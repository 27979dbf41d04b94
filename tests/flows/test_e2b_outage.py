"""An E2B outage in the process-ticket flow: the run fails, no repair attempt is spent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_recon import runtime
from billing_recon.agents.schemas import AnalysisOutput
from billing_recon.domain.fsm import State
from billing_recon.errors import SandboxUnavailable
from billing_recon.llm.offline import OfflineModel
from billing_recon.steps import reconciliation
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.testing.chat_server import ChatServer
from billing_recon_flows.process_ticket import process_ticket
from tests.flows.conftest import email
from tests.integration.e2b_loopback import FakeE2B
from tests.llm_server import use_openai

pytestmark = [pytest.mark.flows, pytest.mark.anyio]


@pytest.fixture
def fake() -> Iterator[FakeE2B]:
    """The loopback E2B."""
    server = FakeE2B().start()
    yield server
    server.stop()


async def test_e2b_dead_kernel_fails_the_run_without_a_retry_or_an_attempt(
        world: Deps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chat_server: ChatServer,
        fake: FakeE2B) -> None:
    good = OfflineModel().complete("analysis", [], AnalysisOutput).output.script
    chat_server.script("analysis", {"script": good})
    use_openai(chat_server, monkeypatch, BILLING_RECON_SANDBOX="e2b", E2B_API_KEY=fake.api_key,
               E2B_API_URL=fake.url, E2B_SANDBOX_URL=fake.url)
    fake.fault = "kernel_dies"  # the next execution only: a retry would succeed

    with pytest.raises(SandboxUnavailable, match="ContextRestarting"):
        await process_ticket(email_path=email(tmp_path, "m1", "ann@example.com",
                                              "INV-000001 is wrong"), approval_wait_s=0)

    deps = runtime.build()
    [ticket] = tickets.in_state(deps.sessions, *State)
    assert ticket.state == "DATA_FETCHED"  # a re-run resumes here
    assert reconciliation.previous_attempts(deps, ticket.id) == []
    assert (fake.executions, chat_server.calls("analysis")) == (1, 1)
