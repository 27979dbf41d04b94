"""process-ticket on the OpenAI adapter (real SDK, loopback server): self-correction, circuit
breaker, per-ticket budgets, the global breaker and no double spend on resume."""

from __future__ import annotations

import itertools
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlalchemy import update

from billing_recon import runtime
from billing_recon.errors import ModelUnavailable
from billing_recon.steps.deps import Deps
from billing_recon.store import model_calls, tickets
from billing_recon.store.models import Ticket
from billing_recon.testing.chat_server import RULES, ChatServer, Status
from billing_recon_flows.process_ticket import process_ticket
from tests.flows.conftest import email, gateway_refunds
from tests.llm_server import use_openai

pytestmark = [pytest.mark.flows, pytest.mark.anyio]
BODY = "INV-000001 is wrong, I was overcharged."
LYING = ('import json\nprint(json.dumps({"invoices": {"INV-000001": {"currency": "USD", '
         '"refundable": "500.00", "reasons": ["price_overcharge"]}}}))')


def _always_broken() -> Any:
    """An analysis model whose every script is new and fails (no loop to detect)."""
    count = itertools.count(1)
    tag = uuid.uuid4().hex[:8]
    return lambda _request: {"script": f"raise RuntimeError('broken {tag} {next(count)}')"}


async def _run(tmp_path: Path, name: str = "m1", body: str = BODY,
               sender: str = "ann@example.com") -> dict[str, Any]:
    path = email(tmp_path, name, sender, body)
    return await process_ticket(email_path=path, approval_wait_s=0)


def _tid(result: dict[str, Any]) -> int:
    return tickets.parse_ticket_id(result["ticket_id"])


async def _artifact(key: str) -> str:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    newest = max(found, key=lambda a: a.created or 0)
    return str(newest.data)


async def test_analysis_repairs_a_broken_script_on_the_second_attempt(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    broken = "import pandas as pd\nprint(pd.read_csv('nope.csv'))"
    chat_server.script("analysis", {"script": broken}, RULES)
    use_openai(chat_server, monkeypatch)
    result = await _run(tmp_path)
    assert result["state"] == "APPROVAL_PENDING"
    assert chat_server.calls("analysis") == 2
    repair = [r for r in chat_server.requests if r.agent == "analysis"][1]
    assert repair.messages[-2] == {"role": "assistant", "content": broken}
    assert "FileNotFoundError" in repair.messages[-1]["content"]


async def test_always_broken_model_gets_exactly_four_calls_then_the_breaker_trips(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    chat_server.script("analysis", _always_broken())
    use_openai(chat_server, monkeypatch)
    result = await _run(tmp_path)
    assert (result["state"], result["reason"]) == ("ESCALATED", "circuit_breaker")
    assert (chat_server.calls("analysis"), chat_server.calls()) == (4, 5)  # + triage, no summary
    tid = _tid(result)
    payload = tickets.events(world.sessions, tid, "transition")[-1].payload
    assert [s["attempt"] for s in payload["scripts"]] == [1, 2, 3, 4]
    assert all("broken" in s["script"] and "RuntimeError" in s["error"]
               for s in payload["scripts"])
    assert payload["tokens"]["completion"] == sum(
        s["usage"]["completion_tokens"] for s in payload["scripts"]) + payload["calls"][0][
        "completion_tokens"]
    trace = await _artifact(f"ticket-{tid}-model-trace")
    assert payload["scripts"][3]["script"] in trace and "Attempt 4: failed" in trace
    assert gateway_refunds(world) == []


async def test_a_rerun_never_buys_more_attempts(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the 4th failed attempt but before the escalation was committed."""
    chat_server.script("analysis", _always_broken())
    use_openai(chat_server, monkeypatch)
    tid = _tid(await _run(tmp_path))
    with world.sessions() as s, s.begin():
        s.execute(update(Ticket).where(Ticket.id == tid).values(state="DATA_FETCHED",
                                                                reason=None))
    again = await process_ticket(ticket_id=tid, approval_wait_s=0)
    assert (again["state"], again["reason"]) == ("ESCALATED", "circuit_breaker")
    assert chat_server.calls("analysis") == 4
    assert len(tickets.events(world.sessions, tid, "analysis_attempt")) == 4


async def test_model_repeating_the_same_script_trips_early(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    chat_server.script("analysis", {"script": "raise RuntimeError('same')"})
    use_openai(chat_server, monkeypatch)
    result = await _run(tmp_path)
    assert (result["state"], result["reason"]) == ("ESCALATED", "circuit_breaker")
    assert chat_server.calls("analysis") == 2
    attempts = tickets.events(world.sessions, _tid(result), "analysis_attempt")
    assert "loop detected" in attempts[1].payload["error"]
    assert "isolation" not in attempts[1].payload  # the repeated script never ran


async def test_call_budget_exhaustion_escalates_and_makes_no_further_call(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    chat_server.script("analysis", _always_broken())
    use_openai(chat_server, monkeypatch, BILLING_RECON_LLM_MAX_CALLS_PER_TICKET="3")
    result = await _run(tmp_path)
    assert (result["state"], result["reason"]) == ("ESCALATED", "budget_exceeded")
    assert chat_server.calls() == 3  # triage + 2 analysis; the 3rd analysis call was refused
    tid = _tid(result)
    assert len(tickets.events(world.sessions, tid, "analysis_attempt")) == 2
    payload = tickets.events(world.sessions, tid, "transition")[-1].payload
    assert payload["budget"]["calls"] == 3 and payload["budget"]["max_calls"] == 3
    assert "Attempt 2" in await _artifact(f"ticket-{tid}-model-trace")
    await process_ticket(ticket_id=tid, approval_wait_s=0)
    assert chat_server.calls() == 3


async def test_token_budget_refuses_a_call_too_big_for_the_ticket(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    use_openai(chat_server, monkeypatch, BILLING_RECON_LLM_MAX_TOKENS_PER_TICKET="3000")
    result = await _run(tmp_path, body=BODY + " " + "Please look again. " * 200)
    assert (result["state"], result["reason"]) == ("ESCALATED", "budget_exceeded")
    assert chat_server.calls() == 0
    assert model_calls.ticket_spend(world.sessions, _tid(result)).tokens == 0


async def test_rerun_after_a_crash_reuses_recorded_answers(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the model answered but before the state was committed, simulated by
    losing the ticket's state writes: the re-run asks the same questions and pays nothing."""
    use_openai(chat_server, monkeypatch)
    first = await _run(tmp_path)
    assert first["state"] == "APPROVAL_PENDING" and chat_server.calls() == 2
    tid = _tid(first)
    with world.sessions() as s, s.begin():
        s.execute(update(Ticket).where(Ticket.id == tid).values(state="RECEIVED", reason=None))
    again = await process_ticket(ticket_id=tid, approval_wait_s=0)
    assert again["state"] == "APPROVAL_PENDING" and chat_server.calls() == 2
    reused = tickets.events(world.sessions, tid, "model_call_reused")
    assert sorted(e.payload["agent"] for e in reused) == ["analysis", "triage"]
    assert model_calls.ticket_spend(world.sessions, tid).calls == 2


async def test_global_breaker_holds_new_work_and_a_later_run_resumes_it(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    chat_server.script("analysis", {"script": LYING}, RULES)
    use_openai(chat_server, monkeypatch, BILLING_RECON_LLM_BREAKER_MAX_ESCALATIONS="1")
    first = await _run(tmp_path, "m1")
    assert first["reason"] == "cross_check_mismatch"
    calls = chat_server.calls()
    held = await _run(tmp_path, "m2", "INV-000002 was charged twice")
    assert (held["state"], held["waiting"]) == ("RECEIVED", "global_breaker_open")
    assert chat_server.calls() == calls
    event = tickets.events(world.sessions, _tid(held), "global_breaker_open")[0].payload
    assert event["escalations"] == 1 and "global breaker open" in event["message"]
    monkeypatch.setenv("BILLING_RECON_LLM_BREAKER_MAX_ESCALATIONS", "5")
    runtime.reset()
    resumed = await process_ticket(ticket_id=_tid(held), approval_wait_s=0)
    assert resumed["state"] == "APPROVAL_PENDING" and "waiting" not in resumed


async def test_every_model_call_of_a_ticket_is_in_its_event_log_with_a_cost(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    use_openai(chat_server, monkeypatch)
    result = await _run(tmp_path, body="Is INV-000003 right?", sender="bob@example.com")
    assert result["reason"] == "no_discrepancy"
    calls = [e.payload for e in tickets.events(world.sessions, _tid(result), "model_call")]
    assert [c["agent"] for c in calls] == [r.agent for r in chat_server.requests] == [
        "triage", "analysis", "summary"]
    assert [c["model"] for c in calls] == ["gpt-4.1-mini", "gpt-4.1", "gpt-4.1-mini"]
    assert all(Decimal(c["cost_usd"]) > 0 and c["prompt_tokens"] > 0 for c in calls)


async def test_reply_falls_back_to_the_template_when_the_budget_is_spent(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    use_openai(chat_server, monkeypatch, BILLING_RECON_LLM_MAX_CALLS_PER_TICKET="2")
    result = await _run(tmp_path, body="Is INV-000003 right?", sender="bob@example.com")
    assert (result["state"], result["reason"]) == ("CLOSED", "no_discrepancy")
    assert chat_server.calls("summary") == 0
    tid = _tid(result)
    assert "billed correctly" in (tickets.get(world.sessions, tid).reply or "")
    (fallback,) = tickets.events(world.sessions, tid, "reply_fallback")
    assert fallback.payload["kind"] == "BudgetExceeded"


async def test_unusable_triage_answer_escalates(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    chat_server.script("triage", '{"is_billing": "maybe"}')
    use_openai(chat_server, monkeypatch)
    result = await _run(tmp_path)
    assert (result["state"], result["reason"]) == ("ESCALATED", "internal_error")
    assert chat_server.calls() == 1


async def test_unreachable_model_fails_the_run_and_a_rerun_resumes(
        world: Deps, tmp_path: Path, chat_server: ChatServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An outage is not the model's failure: no attempt is spent, nothing escalates."""
    chat_server.script("analysis", Status(503))
    use_openai(chat_server, monkeypatch)
    path = email(tmp_path, "m1", "ann@example.com", BODY)
    with pytest.raises(ModelUnavailable, match="HTTP 503"):
        await process_ticket(email_path=path, approval_wait_s=0)
    ticket = tickets.find_by_email(world.sessions, "m1@test")
    assert ticket is not None and ticket.state == "DATA_FETCHED"
    assert chat_server.calls("analysis") == 1  # no Prefect retry on top of the SDK's
    assert tickets.events(world.sessions, ticket.id, "analysis_attempt") == []
    chat_server.script("analysis", RULES)
    resumed = await process_ticket(ticket_id=ticket.id, approval_wait_s=0)
    assert resumed["state"] == "APPROVAL_PENDING"
