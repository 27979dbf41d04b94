"""Token benchmark: model tokens per ticket over the sample inbox, with the default prompts.

The pipeline's steps run on the OpenAI adapter (the official SDK) against the loopback
chat-completions server in rules mode, so every number below is the server's reported usage
(4 characters a token) for the prompts the agents really send. Each ticket is taken through its
whole model life: triage, analysis (with self-correction) and, when it ends in a reply, the
summary (a refund proposal is drafted its "refunded" reply). Printed: per-ticket tokens, the mean
and max, the per-ticket budget that is enforced before every call (no ticket can pass it), and
the structural worst case (four failed analysis attempts with maximal feedback) it must allow.

    python bench/token_bench.py [--seed 7] [--goal 3000]

Exits 1 when the mean misses the goal or a ticket passed its budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

from billing_recon import runtime
from billing_recon.agents.analysis import Failure, build_messages
from billing_recon.agents.schemas import AnalysisOutput, SummaryOutput, TriageOutput
from billing_recon.agents.summary import ReplyFacts, draft_messages
from billing_recon.agents.triage import triage_messages
from billing_recon.config import ModelSettings, load
from billing_recon.domain.email import parse_email
from billing_recon.domain.fsm import State
from billing_recon.errors import AnalysisExhausted, AnalysisFailed
from billing_recon.llm.accounting import prompt_bound
from billing_recon.steps import intake, reconciliation, reply, retrieval
from billing_recon.steps.deps import Deps
from billing_recon.store import model_calls, tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.sample_data import generate
from billing_recon.testing.chat_server import ChatServer

ACTOR = "bench"


def _analyse(deps: Deps, tid: int) -> None:
    for _ in range(deps.settings.budgets.analysis_retries + 1):
        try:
            summary = reconciliation.analysis_attempt(deps, tid, ACTOR)
        except AnalysisExhausted as exc:
            reconciliation.trip_circuit_breaker(deps, tid, ACTOR, str(exc))
            return
        except AnalysisFailed:
            continue
        reconciliation.verify_proposal(deps, tid, summary, ACTOR)
        return
    reconciliation.trip_circuit_breaker(deps, tid, ACTOR, "every attempt failed")


def process(deps: Deps, path: Path) -> int:
    """One email through the model-using steps, as the flow sequences them."""
    tid = intake.open_ticket(deps, path.read_bytes(), str(path)).ticket.id
    intake.run_triage(deps, tid, ACTOR)
    if tickets.get(deps.sessions, tid).state == State.TRIAGED.value:
        retrieval.fetch_invoices(deps, tid, ACTOR)
    if tickets.get(deps.sessions, tid).state == State.DATA_FETCHED.value:
        _analyse(deps, tid)
    ticket = tickets.get(deps.sessions, tid)
    if ticket.state == State.APPROVAL_PENDING.value:
        reply.reply_for(deps, ticket, "refunded", ACTOR)  # the reply it gets once refunded
    return tid


def worst_case(models: ModelSettings, largest_email: bytes) -> int:
    """Every call at its bound: triage of the largest email, 4 failed attempts, a summary."""
    cap = models.output_cap
    total = prompt_bound(triage_messages(parse_email(largest_email)), TriageOutput)
    total += cap("triage")
    big = Failure(script="x" * 100_000, error="y" * 100_000)  # truncated to the feedback cap
    for attempt in range(4):
        total += prompt_bound(build_messages([big] * attempt), AnalysisOutput) + cap("analysis")
    facts = ReplyFacts("T-999999", "refunded", "USD", "99999999.99",
                       {f"INV-{i:06d}": "9999.99" for i in range(20)})
    return total + prompt_bound(draft_messages(facts), SummaryOutput) + cap("summary")


def _row(deps: Deps, tid: int, name: str) -> tuple[int, int, Decimal]:
    calls = model_calls.of_ticket(deps.sessions, tid)
    prompt = sum(c.prompt_tokens for c in calls)
    completion = sum(c.completion_tokens for c in calls)
    cost = sum((c.cost_usd or Decimal(0) for c in calls), Decimal(0))
    ticket = tickets.get(deps.sessions, tid)
    print(f"{name:34} {ticket.state + '(' + (ticket.reason or '') + ')':36} {len(calls):5} "
          f"{prompt:7} {completion:10} {prompt + completion:6}  ${cost:.5f}")
    return prompt, completion, cost


def run(seed: int, goal: int, workdir: Path) -> int:
    """Process the sample inbox and print the table; 0 when the goals are met."""
    sample = generate(workdir / "sample", seed=seed)
    with ChatServer(api_key="sk-bench") as server:
        os.environ.update({"BILLING_RECON_DATABASE_URL": f"sqlite:///{workdir}/billing.db",
                           "BILLING_RECON_HOME": str(workdir / "home"),
                           "OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "sk-bench"})
        os.environ.pop("BILLING_RECON_LLM", None)
        deps = runtime.build()
        load_directory(deps.sessions, sample.data_dir)
        emails = sorted(sample.inbox_dir.glob("*.eml"))
        print(f"token bench: {len(emails)} sample emails (seed {seed}), model "
              f"{deps.model.name}, usage reported by the loopback server\n")
        print(f"{'email':34} {'outcome':36} calls  prompt completion  total  cost")
        rows = [_row(deps, process(deps, p), p.name) for p in emails]
        runtime.reset()
    totals = [p + c for p, c, _ in rows]
    settings = load()
    budget = settings.budgets
    structural = worst_case(settings.llm, max(
        (p.read_bytes() for p in emails), key=len))
    print(f"\nmean per ticket  prompt {statistics.mean(p for p, _, _ in rows):7.0f}  completion "
          f"{statistics.mean(c for _, c, _ in rows):6.0f}  total {statistics.mean(totals):6.0f}"
          f"  (goal < {goal})  cost ${statistics.mean(c for _, _, c in rows):.5f}")
    print(f"max per ticket   total {max(totals)}")
    print(f"enforced bound   {budget.max_tokens_per_ticket} tokens and "
          f"{budget.max_calls_per_ticket} calls per ticket (checked before every call)")
    print(f"structural worst case of a ticket (every call at its bound) {structural}")
    ok = statistics.mean(totals) < goal and max(totals) <= budget.max_tokens_per_ticket
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="tokens per ticket over the sample inbox")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--goal", type=int, default=3000, help="mean tokens per ticket")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="token-bench-") as tmp:
        return run(args.seed, args.goal, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
