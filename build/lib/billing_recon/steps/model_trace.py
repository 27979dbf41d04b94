"""A ticket's model work as evidence: every analysis attempt (script, error, tokens) and call.

Escalations caused by the model (circuit breaker, budget) carry this trace in their event
payload, and the orchestrator publishes it as markdown for the operator.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing_recon.steps.deps import Deps
from billing_recon.store import model_calls, tickets

ATTEMPT = "analysis_attempt"
FENCE = "````"  # a script may itself contain ``` fences


def trace(deps: Deps, ticket_id: int) -> dict[str, Any]:
    """Attempts with their scripts and errors, every model call, and the totals."""
    attempts = [e.payload for e in tickets.events(deps.sessions, ticket_id, kind=ATTEMPT)]
    calls = model_calls.of_ticket(deps.sessions, ticket_id)
    costs = [c.cost_usd for c in calls if c.cost_usd is not None]
    return {
        "attempts": len(attempts),
        "errors": [a.get("error") for a in attempts],
        "scripts": [{k: a.get(k) for k in ("attempt", "ok", "script_sha", "script", "error",
                                           "usage")} for a in attempts],
        "calls": [{"agent": c.agent, "model": c.model, "prompt_tokens": c.prompt_tokens,
                   "completion_tokens": c.completion_tokens,
                   "cost_usd": None if c.cost_usd is None else f"{c.cost_usd:.6f}"}
                  for c in calls],
        "tokens": {"prompt": sum(c.prompt_tokens for c in calls),
                   "completion": sum(c.completion_tokens for c in calls)},
        "cost_usd": f"{sum(costs, Decimal(0)):.6f}",
    }


def _attempt_lines(attempt: dict[str, Any]) -> list[str]:
    usage = attempt.get("usage") or {}
    return [f"### Attempt {attempt.get('attempt')}: {'ok' if attempt.get('ok') else 'failed'}",
            "", f"sha `{(attempt.get('script_sha') or '')[:12]}` · prompt "
            f"{usage.get('prompt_tokens', 0)} · completion {usage.get('completion_tokens', 0)} "
            "tokens", "", f"{FENCE}python", attempt.get("script") or "(no script)", FENCE, "",
            "Error:", "", FENCE, str(attempt.get("error") or "none"), FENCE, ""]


def markdown(ticket_id: int, reason: str, data: dict[str, Any]) -> str:
    """The trace as a markdown document (a Prefect artifact)."""
    lines = [f"## {tickets.format_ticket_id(ticket_id)}: model trace ({reason})", "",
             f"**Tokens** prompt {data['tokens']['prompt']} · completion "
             f"{data['tokens']['completion']} · **cost** ${data['cost_usd']}", "",
             "| # | agent | model | prompt | completion | cost USD |",
             "|---|---|---|---:|---:|---:|"]
    lines += [f"| {i} | {c['agent']} | {c['model']} | {c['prompt_tokens']} | "
              f"{c['completion_tokens']} | {c['cost_usd'] or 'unpriced'} |"
              for i, c in enumerate(data["calls"], 1)]
    lines.append("")
    for attempt in data["scripts"]:
        lines += _attempt_lines(attempt)
    return "\n".join(lines)
