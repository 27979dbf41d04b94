"""The sample inbox through reconcile-inbox on the OpenAI adapter: the real SDK talks HTTP to
the loopback server (rules mode), and every proposal equals the generator's ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_recon.domain.email import parse_email
from billing_recon.ground_truth import matches
from billing_recon.llm.openai_chat import OpenAIChatModel
from billing_recon.steps.deps import Deps
from billing_recon.store import model_calls, tickets
from billing_recon.testing.chat_server import ChatServer
from billing_recon_flows.reconcile_inbox import reconcile_inbox
from tests.flows.conftest import sample_world
from tests.llm_server import use_openai

pytestmark = [pytest.mark.flows, pytest.mark.anyio]


@pytest.fixture
def openai_sample(tmp_path: Path, chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[tuple[Deps, Path, dict]]:
    """The sample data in a fresh SQLite database; the pipeline on the OpenAI adapter."""
    use_openai(chat_server, monkeypatch)
    with sample_world(f"sqlite:///{tmp_path}/billing.db", tmp_path, monkeypatch) as world:
        yield world


async def test_sample_inbox_on_the_openai_adapter_equals_the_ground_truth(
        openai_sample: tuple[Deps, Path, dict], chat_server: ChatServer) -> None:
    deps, inbox, truth = openai_sample
    assert isinstance(deps.model, OpenAIChatModel)
    await reconcile_inbox(inbox=str(inbox), approval_wait_s=0)
    for path in sorted(inbox.glob("*.eml")):
        ticket = tickets.find_by_email(deps.sessions, parse_email(path.read_bytes()).email_id)
        assert ticket is not None
        assert matches(truth[path.name], ticket), (path.name, ticket.state, ticket.proposal)
        if truth[path.name]["refund"]:
            assert ticket.proposal["claimed"] == truth[path.name]["claimed"], path.name
        recorded = model_calls.of_ticket(deps.sessions, ticket.id)
        assert all(c.model.startswith("gpt-4.1") for c in recorded), path.name
    assert chat_server.calls("triage") == len(truth)
    assert chat_server.calls("analysis") == sum(
        1 for t in truth.values() if t["expected_state"] in {"APPROVAL_PENDING", "CLOSED"}
        and t["reason"] in {None, "no_discrepancy"})
