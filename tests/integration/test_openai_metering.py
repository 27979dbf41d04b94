"""Metered model calls over the real SDK and a real database: replay, budgets, global breaker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import event, update

from billing_recon import runtime
from billing_recon.agents.schemas import TriageOutput
from billing_recon.domain.email import parse_email
from billing_recon.domain.fsm import Reason, State
from billing_recon.errors import BudgetExceeded, GlobalBreakerOpen, ModelOutputInvalid
from billing_recon.llm.accounting import prompt_bound
from billing_recon.llm.port import ChatMessage
from billing_recon.steps.budget import metered
from billing_recon.steps.deps import Deps
from billing_recon.store import inbox, model_calls, tickets
from billing_recon.store.models import TicketEvent
from billing_recon.store.types import utcnow
from billing_recon.testing.chat_server import ChatServer
from tests.llm_server import use_openai

TRIAGE_CAP = 300  # DEFAULT_OUTPUT_CAPS["triage"]
MakeDeps = Callable[..., Deps]


def _ask(text: str) -> list[ChatMessage]:
    return [{"role": "system", "content": "triage"},
            {"role": "user", "content": f"<email>\n{text}\n</email>"}]


@pytest.fixture
def make_deps(tmp_path: Path, chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[MakeDeps]:
    """Deps on a fresh SQLite database and the loopback server, with extra env settings."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", f"sqlite:///{tmp_path}/billing.db")

    def build(**env: str) -> Deps:
        use_openai(chat_server, monkeypatch, **env)
        return runtime.build()

    yield build
    runtime.reset()


def _ticket(deps: Deps, name: str = "m1") -> int:
    raw = (f"From: ann@example.com\r\nSubject: hi\r\nMessage-ID: <{name}@t>\r\n\r\n"
           "INV-000001 is wrong\r\n").encode()
    return inbox.open_ticket(deps.sessions, parse_email(raw), None).ticket.id


def test_same_question_on_a_rerun_reuses_the_recorded_answer(
        make_deps: MakeDeps, chat_server: ChatServer) -> None:
    deps = make_deps()
    tid = _ticket(deps)
    first = metered(deps, tid, "test").complete("triage", _ask("INV-000001"), TriageOutput)
    again = metered(deps, tid, "test").complete("triage", _ask("INV-000001"), TriageOutput)
    assert again.output == first.output and chat_server.calls() == 1
    assert [e.kind for e in tickets.events(deps.sessions, tid)][-2:] == [
        "model_call", "model_call_reused"]
    other = _ticket(deps, "m2")  # the same question for another ticket is its own call
    metered(deps, other, "test").complete("triage", _ask("INV-000001"), TriageOutput)
    assert chat_server.calls() == 2


def test_a_new_call_checks_replay_budget_and_breaker_in_one_read_transaction(
        make_deps: MakeDeps, chat_server: ChatServer) -> None:
    deps = make_deps()
    tid = _ticket(deps)
    ended: list[str] = []
    engine = deps.sessions.kw["bind"]
    rolled, committed = (lambda _c: ended.append("read")), (lambda _c: ended.append("write"))
    event.listen(engine, "rollback", rolled)
    event.listen(engine, "commit", committed)
    try:
        metered(deps, tid, "test").complete("triage", _ask("INV-000001"), TriageOutput)
    finally:
        event.remove(engine, "rollback", rolled)
        event.remove(engine, "commit", committed)
    assert ended == ["read", "write"] and chat_server.calls() == 1


def test_every_call_is_logged_with_its_usage_and_cost(
        make_deps: MakeDeps, chat_server: ChatServer) -> None:
    deps = make_deps()
    tid = _ticket(deps)
    reply = metered(deps, tid, "test").complete("triage", _ask("INV-000001"), TriageOutput)
    event = tickets.events(deps.sessions, tid, "model_call")[0].payload
    assert (event["prompt_tokens"], event["completion_tokens"]) == (
        reply.usage.prompt_tokens, reply.usage.completion_tokens)
    cost = (Decimal(reply.usage.prompt_tokens) * Decimal("0.40")
            + Decimal(reply.usage.completion_tokens) * Decimal("1.60")) / 1_000_000
    assert Decimal(event["cost_usd"]) == cost.quantize(Decimal("1e-8"))
    assert event["model"] == "gpt-4.1-mini" and event["agent"] == "triage"


def test_call_limit_refuses_the_next_call_without_making_it(
        make_deps: MakeDeps, chat_server: ChatServer) -> None:
    deps = make_deps(BILLING_RECON_LLM_MAX_CALLS_PER_TICKET="1")
    tid = _ticket(deps)
    metered(deps, tid, "test").complete("triage", _ask("one"), TriageOutput)
    with pytest.raises(BudgetExceeded, match=r"made 1 model calls \(limit 1\)"):
        metered(deps, tid, "test").complete("triage", _ask("two"), TriageOutput)
    assert chat_server.calls() == 1


def test_token_budget_counts_the_calls_upper_bound_before_calling(
        make_deps: MakeDeps, chat_server: ChatServer) -> None:
    bound = prompt_bound(_ask("x"), TriageOutput) + TRIAGE_CAP
    deps = make_deps(BILLING_RECON_LLM_MAX_TOKENS_PER_TICKET=str(bound - 1))
    tid = _ticket(deps)
    with pytest.raises(BudgetExceeded, match=f"may use {bound} tokens") as info:
        metered(deps, tid, "test").complete("triage", _ask("x"), TriageOutput)
    assert chat_server.calls() == 0 and info.value.details["call_bound"] == bound
    deps = make_deps(BILLING_RECON_LLM_MAX_TOKENS_PER_TICKET=str(bound))
    metered(deps, tid, "test").complete("triage", _ask("x"), TriageOutput)
    assert chat_server.calls() == 1


def test_a_server_without_usage_is_charged_the_calls_bound(
        make_deps: MakeDeps, tmp_path: Path) -> None:
    with ChatServer(api_key="sk-test-loopback", usage=False) as silent:
        deps = make_deps(OPENAI_BASE_URL=silent.url)
        tid = _ticket(deps)
        metered(deps, tid, "test").complete("triage", _ask("x"), TriageOutput)
    (call,) = model_calls.of_ticket(deps.sessions, tid)
    assert (call.prompt_tokens, call.completion_tokens, call.usage_reported) == (
        prompt_bound(_ask("x"), TriageOutput), TRIAGE_CAP, False)


def test_an_unusable_answer_is_paid_once_and_replayed_as_unusable(
        make_deps: MakeDeps, chat_server: ChatServer) -> None:
    deps = make_deps()
    tid = _ticket(deps)
    chat_server.script("triage", "not json at all")
    for _ in range(2):
        with pytest.raises(ModelOutputInvalid):
            metered(deps, tid, "test").complete("triage", _ask("x"), TriageOutput)
    assert chat_server.calls() == 1
    spent = model_calls.ticket_spend(deps.sessions, tid)
    assert spent.calls == 1 and spent.tokens == prompt_bound(_ask("x"), TriageOutput) + 300


def _escalate(deps: Deps, reason: Reason, name: str) -> int:
    tid = _ticket(deps, name)
    tickets.transition(deps.sessions, tid, State.ESCALATED, reason=reason, actor="test")
    return tid


def test_breaker_opens_on_recent_model_escalations_and_says_so(
        make_deps: MakeDeps, chat_server: ChatServer) -> None:
    deps = make_deps(BILLING_RECON_LLM_BREAKER_MAX_ESCALATIONS="2")
    tid = _ticket(deps)
    _escalate(deps, Reason.APPROVAL_TIMEOUT, "a")  # not the model's doing: not counted
    _escalate(deps, Reason.CROSS_CHECK_MISMATCH, "b")
    metered(deps, tid, "test").complete("triage", _ask("x"), TriageOutput)
    _escalate(deps, Reason.CIRCUIT_BREAKER, "c")
    with pytest.raises(GlobalBreakerOpen, match="2 model escalations") as info:
        metered(deps, tid, "test").complete("triage", _ask("y"), TriageOutput)
    assert info.value.details["escalations"] == 2 and chat_server.calls() == 1
    # a recorded answer costs nothing, so it is still served
    metered(deps, tid, "test").complete("triage", _ask("x"), TriageOutput)
    with deps.sessions() as s, s.begin():  # the escalations leave the window
        s.execute(update(TicketEvent).values(at=utcnow() - timedelta(hours=2)))
    metered(deps, tid, "test").complete("triage", _ask("y"), TriageOutput)
    assert chat_server.calls() == 2


def test_breaker_opens_on_recent_token_spend(make_deps: MakeDeps, chat_server: ChatServer) -> None:
    deps = make_deps(BILLING_RECON_LLM_BREAKER_MAX_TOKENS="50")
    first, second = _ticket(deps, "a"), _ticket(deps, "b")
    metered(deps, first, "test").complete("triage", _ask("x" * 400), TriageOutput)
    with pytest.raises(GlobalBreakerOpen, match="tokens"):
        metered(deps, second, "test").complete("triage", _ask("x"), TriageOutput)
    assert chat_server.calls() == 1
