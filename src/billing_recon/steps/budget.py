"""Metered model access for one ticket: replay, the ticket's budget, the global breaker.

Every agent call of a step goes through ``metered(deps, ticket_id, actor)``, a ChatModel that
wraps whatever model is configured (offline included), in this order:

1. replay: an answer recorded for the same (ticket, agent, input hash) is returned without a
   call, so a re-run after a crash never pays twice;
2. the global breaker: too many model-caused escalations or tokens in the recent window and no
   new model work starts (GlobalBreakerOpen; the ticket waits);
3. the ticket's budget: the call's upper bound (prompt bytes + output cap) must fit in what is
   left, else it is not made (BudgetExceeded);
4. the call, recorded with its usage and cost, and logged in the ticket's event log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from billing_recon.domain.fsm import Reason, State
from billing_recon.errors import BudgetExceeded, GlobalBreakerOpen, ModelOutputInvalid
from billing_recon.llm.accounting import input_hash, prompt_bound
from billing_recon.llm.port import ChatMessage, Reply, T, Usage
from billing_recon.steps import model_trace
from billing_recon.steps.deps import Deps
from billing_recon.store import model_calls, tickets
from billing_recon.store.models import ModelCall, Ticket
from billing_recon.store.types import utcnow

#: Escalations that say the model misbehaves; they feed the global breaker.
MODEL_ESCALATIONS = (Reason.CIRCUIT_BREAKER.value, Reason.BUDGET_EXCEEDED.value,
                     Reason.CROSS_CHECK_MISMATCH.value)
CALL = "model_call"
REUSED = "model_call_reused"


def breaker_reading(deps: Deps, reading: model_calls.Reading) -> dict[str, Any]:
    """Recent model-caused escalations and tokens, with the thresholds they are held to."""
    budget = deps.settings.budgets
    return {"window_s": budget.breaker_window_s, "escalations": reading.escalations_since,
            "max_escalations": budget.breaker_max_escalations, "tokens": reading.tokens_since,
            "max_tokens": budget.breaker_max_tokens}


def _window_start(deps: Deps) -> datetime:
    return utcnow() - timedelta(seconds=deps.settings.budgets.breaker_window_s)



def check_breaker(deps: Deps, reading: model_calls.Reading) -> None:
    """Raise GlobalBreakerOpen when recent escalations or token spend reached a threshold."""
    r = breaker_reading(deps, reading)
    if r["escalations"] >= r["max_escalations"] or r["tokens"] >= r["max_tokens"]:
        raise GlobalBreakerOpen(
            f"global breaker open: {r['escalations']} model escalations (limit "
            f"{r['max_escalations']}) and {r['tokens']} tokens (limit {r['max_tokens']}) in "
            f"the last {r['window_s']:g}s; new model work waits, re-run the ticket later",
            details=r)


def check_budget(deps: Deps, spent: model_calls.Spend, agent: str, bound: int) -> None:
    """Raise BudgetExceeded when a call of up to ``bound`` tokens does not fit the ticket."""
    budget = deps.settings.budgets
    details = {"agent": agent, "calls": spent.calls, "max_calls": budget.max_calls_per_ticket,
               "tokens": spent.tokens, "call_bound": bound,
               "max_tokens": budget.max_tokens_per_ticket}
    if spent.calls + 1 > budget.max_calls_per_ticket:
        raise BudgetExceeded(f"{agent} call refused: the ticket made {spent.calls} model calls "
                             f"(limit {budget.max_calls_per_ticket})", details=details)
    if spent.tokens + bound > budget.max_tokens_per_ticket:
        raise BudgetExceeded(f"{agent} call refused: it may use {bound} tokens and the ticket "
                             f"used {spent.tokens} of {budget.max_tokens_per_ticket}",
                             details=details)


@dataclass(frozen=True)
class _Call:
    agent: str
    digest: str
    prompt_bound: int
    output_cap: int

    @property
    def bound(self) -> int:
        return self.prompt_bound + self.output_cap


class MeteredModel:
    """A ChatModel for one ticket that replays, budgets and records every call (see module)."""

    def __init__(self, deps: Deps, ticket_id: int, actor: str) -> None:
        self._deps, self._ticket_id, self._actor = deps, ticket_id, actor
        self.name = deps.model.name

    def complete(self, agent: str, messages: list[ChatMessage], schema: type[T]) -> Reply[T]:
        """Replay a recorded answer, or make a call the breaker and the budget allow."""
        call = _Call(agent, input_hash(agent, messages, schema), prompt_bound(messages, schema),
                     self._deps.settings.llm.output_cap(agent))
        reading = model_calls.find_or_read(self._deps.sessions, self._ticket_id, agent,
                                           call.digest, _window_start(self._deps),
                                           MODEL_ESCALATIONS)
        if isinstance(reading, ModelCall):  # recorded: replayed, not paid again
            return self._replay(reading, schema)
        check_breaker(self._deps, reading)
        check_budget(self._deps, reading.spend, agent, call.bound)
        try:
            reply = self._deps.model.complete(agent, messages, schema)
        except ModelOutputInvalid as exc:
            reported = exc.prompt_tokens is not None
            usage = Usage(exc.prompt_tokens or 0, exc.completion_tokens or 0, reported)
            self._record(call, exc.model, None, str(exc), usage)
            raise
        self._record(call, reply.model, reply.output.model_dump(mode="json"), None, reply.usage)
        return reply

    def _replay(self, row: ModelCall, schema: type[T]) -> Reply[T]:
        tickets.note(self._deps.sessions, self._ticket_id, REUSED, self._actor,
                     {"agent": row.agent, "input_hash": row.input_hash, "call_id": row.id})
        usage = Usage(row.prompt_tokens, row.completion_tokens, row.usage_reported)
        if row.output is None:
            raise ModelOutputInvalid(row.error or "recorded answer was invalid", model=row.model,
                                     prompt_tokens=row.prompt_tokens,
                                     completion_tokens=row.completion_tokens)
        return Reply(output=schema.model_validate(row.output), usage=usage, model=row.model)

    def _record(self, call: _Call, model: str, output: dict[str, Any] | None,
                error: str | None, usage: Usage) -> None:
        if not usage.reported:  # charge the most the call could have cost
            usage = Usage(call.prompt_bound, call.output_cap, reported=False)
        cost = self._deps.settings.llm.cost(model, usage.prompt_tokens,
                                                   usage.completion_tokens)
        payload: dict[str, Any] = {
            "agent": call.agent, "model": model, "input_hash": call.digest,
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "usage_reported": usage.reported, "call_bound": call.bound,
            "cost_usd": None if cost is None else f"{cost:.8f}", "ok": error is None,
            "error": error}

        def add_call(session: Session, _ticket: Ticket) -> None:
            # The call and its event commit together (one transaction per model call).
            payload["call_id"] = model_calls.add_within(session, dict(
                ticket_id=self._ticket_id, agent=call.agent, input_hash=call.digest,
                model=model, output=output, error=error, prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens, usage_reported=usage.reported,
                cost_usd=cost))

        tickets.note(self._deps.sessions, self._ticket_id, CALL, self._actor, payload,
                     within=add_call)


def metered(deps: Deps, ticket_id: int, actor: str) -> MeteredModel:
    """The configured model, metered for this ticket."""
    return MeteredModel(deps, ticket_id, actor)


def escalate_over_budget(deps: Deps, ticket_id: int, actor: str, message: str,
                         details: dict[str, Any]) -> Ticket:
    """Any non-terminal state -> ESCALATED(budget_exceeded), with the model trace."""
    return tickets.transition(deps.sessions, ticket_id, State.ESCALATED,
                              reason=Reason.BUDGET_EXCEEDED, actor=actor,
                              payload={"error": message, "budget": details,
                                       **model_trace.trace(deps, ticket_id)})


def hold(deps: Deps, ticket_id: int, actor: str, message: str, details: dict[str, Any]) -> None:
    """Log that the ticket waits for the global breaker; its state is left as it is."""
    tickets.note(deps.sessions, ticket_id, "global_breaker_open", actor,
                 {"message": message, **details})
