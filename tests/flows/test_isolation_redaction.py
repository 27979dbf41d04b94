"""Whatever a sandbox returns is bounded and redacted before it is stored, logged or shown to
the model (issue 14, item 1): here model-written code runs unconfined (the development opt-in),
reads the signing key from its file, prints it and raises with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from billing_recon.agents.schemas import AnalysisOutput
from billing_recon.config import load
from billing_recon.domain.redaction import REDACTED
from billing_recon.llm.offline import OfflineModel
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.testing.chat_server import ChatServer
from billing_recon_flows.process_ticket import process_ticket
from tests.flows.conftest import email
from tests.llm_server import use_openai

pytestmark = [pytest.mark.flows, pytest.mark.anyio]


async def test_isolation_secrets_printed_by_model_code_are_redacted(
        world: Deps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        chat_server: ChatServer) -> None:
    monkeypatch.setenv("BILLING_RECON_SANDBOX", "subprocess")
    monkeypatch.setenv("BILLING_RECON_SANDBOX_ALLOW_WEAK_ISOLATION", "true")
    key = load().signing_key().decode()  # written to its file under BILLING_RECON_HOME
    path = tmp_path / "home" / "signing.key"
    stealing = (f"k = open({str(path)!r}).read().strip()\nprint('x' * 9000, 'stolen', k)\n"
                "raise RuntimeError('the key is ' + k)")
    good = OfflineModel().complete("analysis", [], AnalysisOutput).output.script
    chat_server.script("analysis", {"script": stealing}, {"script": good})
    use_openai(chat_server, monkeypatch)

    result = await process_ticket(email_path=email(tmp_path, "m1", "ann@example.com",
                                                   "INV-000001 is wrong"), approval_wait_s=0)

    assert result["state"] == "APPROVAL_PENDING"  # the repaired second attempt went on
    tid = tickets.parse_ticket_id(result["ticket_id"])
    attempts = [e.payload for e in tickets.events(world.sessions, tid, "analysis_attempt")]
    first = attempts[0]
    assert first["isolation"] == "rlimit-subprocess"
    assert f"stolen {REDACTED}" in first["stdout_tail"] and len(first["stdout_tail"]) <= 4000
    assert f"the key is {REDACTED}" in first["error"] and len(first["error"]) <= 4000
    everything = json.dumps([e.payload for e in tickets.events(world.sessions, tid)])
    assert key not in everything
    repair_prompts = [json.dumps(r.body) for r in chat_server.requests if r.agent == "analysis"]
    assert len(repair_prompts) == 2 and REDACTED in repair_prompts[1]
    assert all(key not in prompt for prompt in repair_prompts)
