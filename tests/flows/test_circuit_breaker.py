"""The capped, self-correcting analysis: 4 attempts, then the circuit breaker."""

from __future__ import annotations

from pathlib import Path

import pytest

from billing_recon import runtime
from billing_recon.agents.schemas import AnalysisOutput
from billing_recon.llm.offline import OfflineModel
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.testing.chat_server import ChatServer
from billing_recon_flows.process_ticket import process_ticket
from tests.flows.conftest import email, gateway_refunds
from tests.llm_server import use_openai

pytestmark = [pytest.mark.flows, pytest.mark.anyio]


class ScriptedAnalysis:
    """The loopback model server: rules for triage and summary, the analysis answers scripted
    (the last one repeats), reached through the real OpenAI SDK."""

    def __init__(self, server: ChatServer, scripts: list[str]) -> None:
        self.server = server
        server.script("analysis", *[{"script": script} for script in scripts])

    @property
    def analysis_calls(self) -> int:
        """How many analysis answers the server gave."""
        return self.server.calls("analysis")


def _use(model: ScriptedAnalysis, monkeypatch: pytest.MonkeyPatch) -> None:
    use_openai(model.server, monkeypatch)


async def test_always_failing_script_gets_exactly_four_attempts_then_escalates(
        world: Deps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        chat_server: ChatServer) -> None:
    model = ScriptedAnalysis(chat_server, [f"raise RuntimeError('broken {i}')" for i in range(10)])
    _use(model, monkeypatch)
    result = await process_ticket(email_path=email(tmp_path, "m1", "ann@example.com",
                                                   "INV-000001 is wrong"), approval_wait_s=0)
    assert (result["state"], result["reason"]) == ("ESCALATED", "circuit_breaker")
    tid = tickets.parse_ticket_id(result["ticket_id"])
    attempts = tickets.events(runtime.build().sessions, tid, "analysis_attempt")
    assert [a.payload["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert model.analysis_calls == 4
    assert all("RuntimeError: broken" in a.payload["error"] for a in attempts)
    escalation = tickets.events(runtime.build().sessions, tid, "transition")[-1]
    assert escalation.payload["attempts"] == 4
    assert gateway_refunds(world) == []


async def test_broken_script_is_repaired_on_the_next_attempt(
        world: Deps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        chat_server: ChatServer) -> None:
    good = OfflineModel().complete("analysis", [], AnalysisOutput).output.script
    model = ScriptedAnalysis(chat_server,
                             ["import pandas as pd\nprint(pd.read_csv('nope.csv'))", good])
    _use(model, monkeypatch)
    result = await process_ticket(email_path=email(tmp_path, "m1", "ann@example.com",
                                                   "INV-000001 is wrong"), approval_wait_s=0)
    assert result["state"] == "APPROVAL_PENDING"
    tid = tickets.parse_ticket_id(result["ticket_id"])
    attempts = tickets.events(runtime.build().sessions, tid, "analysis_attempt")
    assert [a.payload["ok"] for a in attempts] == [False, True]
    assert "FileNotFoundError" in attempts[0].payload["error"]


async def test_repeated_script_is_a_failure_without_running_again(
        world: Deps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        chat_server: ChatServer) -> None:
    model = ScriptedAnalysis(chat_server, ["raise RuntimeError('same')"])
    _use(model, monkeypatch)
    result = await process_ticket(email_path=email(tmp_path, "m1", "ann@example.com",
                                                   "INV-000001 is wrong"), approval_wait_s=0)
    assert result["reason"] == "circuit_breaker"
    tid = tickets.parse_ticket_id(result["ticket_id"])
    attempts = tickets.events(runtime.build().sessions, tid, "analysis_attempt")
    assert "loop detected" in attempts[1].payload["error"]
    assert "isolation" not in attempts[1].payload  # never reached the sandbox


async def test_script_disagreeing_with_trusted_rules_escalates(
        world: Deps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        chat_server: ChatServer) -> None:
    lying = ('import json\nprint(json.dumps({"invoices": {"INV-000001": {"currency": "USD", '
             '"refundable": "500.00", "reasons": ["price_overcharge"]}}}))')
    _use(ScriptedAnalysis(chat_server, [lying]), monkeypatch)
    result = await process_ticket(email_path=email(tmp_path, "m1", "ann@example.com",
                                                   "INV-000001 is wrong"), approval_wait_s=0)
    assert (result["state"], result["reason"]) == ("ESCALATED", "cross_check_mismatch")
    assert gateway_refunds(world) == []
