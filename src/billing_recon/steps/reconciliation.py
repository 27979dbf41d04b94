"""Reconcile in the sandbox (self-correcting attempts), then verify against the trusted rules."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pandas as pd

from billing_recon.agents.analysis import Failure, author_script
from billing_recon.domain import rules_direct
from billing_recon.domain.fsm import Reason, State
from billing_recon.domain.proposal import Proposal
from billing_recon.domain.redaction import redact
from billing_recon.domain.summary import SandboxSummary
from billing_recon.errors import (
    AnalysisExhausted,
    AnalysisFailed,
    ModelOutputInvalid,
    SandboxUnavailable,
)
from billing_recon.llm.port import Usage
from billing_recon.steps import model_trace, money_owed
from billing_recon.steps.budget import metered
from billing_recon.steps.deps import Deps
from billing_recon.steps.reply import reply_for
from billing_recon.store import billing, commitments, tickets
from billing_recon.store.models import Ticket
from billing_recon.store.types import utcnow

ATTEMPT = "analysis_attempt"
SANDBOX_UNAVAILABLE = "sandbox_unavailable"
MAX_LOGGED_OUTPUT = 4000


def scope_data(deps: Deps, ticket: Ticket) -> dict[str, pd.DataFrame]:
    """The rows of the ticket's scope, read from the database (parameterised, customer-scoped)."""
    scope = ticket.scope or {}
    with deps.sessions() as session:
        return billing.scope_tables(session, scope["customer_id"], scope["invoice_ids"])


def previous_attempts(deps: Deps, ticket_id: int) -> list[dict[str, Any]]:
    """Every logged analysis attempt of the ticket, oldest first."""
    return [e.payload for e in tickets.events(deps.sessions, ticket_id, kind=ATTEMPT)]


def _error_text(result: Any) -> str | None:
    if result.timed_out:
        return f"timed out after {result.duration_s:.1f}s"
    if result.error is not None:
        return f"{result.error.traceback or ''}\n{result.error.name}: {result.error.value}"
    if result.exit_code != 0:
        return f"exited with code {result.exit_code}\n{result.stderr[-2000:]}"
    return None


def _redacted(deps: Deps, result: Any) -> tuple[str, str | None]:
    """The output tail and error text to store, log and show the model: bounded, and without
    any secret value the process knows (model-written code may have printed one)."""
    secrets = deps.settings.secret_values()
    error = _error_text(result)
    return (redact(result.stdout, secrets, MAX_LOGGED_OUTPUT),
            None if error is None else redact(error, secrets, MAX_LOGGED_OUTPUT))


@dataclass(frozen=True)
class Analysis:
    """A successful attempt: the sandbox's summary and the scope rows it was sent as CSV.

    ``verify_proposal`` runs the trusted rules on exactly these rows (one read per ticket, and
    the rules check what the sandbox saw); without them (``rows=None``) it reads the scope.
    """

    summary: SandboxSummary
    rows: dict[str, pd.DataFrame] | None = None


def _run(deps: Deps, script: str, ticket: Ticket) -> tuple[Analysis | None, str | None,
                                                             dict[str, Any]]:
    tables = scope_data(deps, ticket)
    result = deps.sandbox.run(script, billing.to_csv_files(tables))
    stdout_tail, error = _redacted(deps, result)
    info = {"isolation": result.isolation, "duration_s": round(result.duration_s, 3),
            "stdout_tail": stdout_tail}
    if error is not None:
        return None, error, info
    scope = ticket.scope or {}
    try:
        summary = SandboxSummary.parse(result.parse_json_stdout(), scope["invoice_ids"])
    except ValueError as exc:
        return None, redact(f"invalid output: {exc}", deps.settings.secret_values(),
                            MAX_LOGGED_OUTPUT), info
    return Analysis(summary, tables), None, info


def _sandboxed(deps: Deps, ticket: Ticket, actor: str, script: str, sha: str
               ) -> tuple[Analysis | None, str | None, dict[str, Any]]:
    """`_run`; a sandbox that cannot run the script is the infrastructure's failure, not the
    script's: it is noted apart from the attempts (so it spends none and the model never sees
    it as the script's error) and raised again."""
    try:
        return _run(deps, script, ticket)
    except SandboxUnavailable as exc:
        tickets.note(deps.sessions, ticket.id, SANDBOX_UNAVAILABLE, actor, {
            "script_sha": sha, "error": redact(str(exc), deps.settings.secret_values(),
                                               MAX_LOGGED_OUTPUT)})
        raise


def _author(deps: Deps, ticket_id: int, actor: str, failures: list[Failure]
            ) -> tuple[str, str | None, Usage]:
    """The model's script; an unusable answer is a failed attempt, not a crash."""
    try:
        authored = author_script(metered(deps, ticket_id, actor), failures)
    except ModelOutputInvalid as exc:
        usage = Usage(exc.prompt_tokens or 0, exc.completion_tokens or 0)
        return "", f"the answer was not a usable script: {exc}", usage
    return authored.script, None, authored.usage


def analysis_attempt(deps: Deps, ticket_id: int, actor: str,
                     known: Ticket | None = None) -> Analysis:
    """One attempt: the model writes (or repairs) a script, the sandbox runs it.

    A failure is logged with the script and the error, then raised as AnalysisFailed so the
    orchestrator's capped retries run the next attempt with that feedback. A script that
    failed before is not run again and stops the attempts (loop detection), and once every
    allowed attempt is logged (also across re-runs) no model call is made: both raise
    AnalysisExhausted, which the orchestrator does not retry. A sandbox that cannot run the
    script raises SandboxUnavailable and spends no attempt (`_sandboxed`). ``known``: the
    ticket as the caller last committed it (``tickets.current``; its scope is what is used).
    """
    ticket = tickets.current(deps.sessions, ticket_id, known)
    before = previous_attempts(deps, ticket_id)
    limit = deps.settings.budgets.analysis_retries + 1
    if len(before) >= limit:
        raise AnalysisExhausted(f"all {limit} analysis attempts failed", attempt=len(before),
                                script_sha=before[-1]["script_sha"])
    failures = [Failure(a["script"], a["error"]) for a in before if not a["ok"]]
    script, error, usage = _author(deps, ticket_id, actor, failures)
    sha = hashlib.sha256(script.encode()).hexdigest()
    looping = error is None and any(a["script_sha"] == sha for a in before if not a["ok"])
    summary: Analysis | None = None
    info: dict[str, Any] = {}
    if looping:
        error = "the same script failed before (loop detected)"
    elif error is None:
        summary, error, info = _sandboxed(deps, ticket, actor, script, sha)
    tickets.note(deps.sessions, ticket_id, ATTEMPT, actor, {
        "attempt": len(before) + 1, "ok": error is None, "script_sha": sha, "script": script,
        "error": error, "model": deps.model.name,
        "usage": {"prompt_tokens": usage.prompt_tokens,
                  "completion_tokens": usage.completion_tokens}, **info})
    if looping:  # a model that repeats a failed script despite the feedback is stuck: trip now
        raise AnalysisExhausted(f"{error}; no further attempt", attempt=len(before) + 1,
                                script_sha=sha)
    if error is not None:
        raise AnalysisFailed(error, attempt=len(before) + 1, script_sha=sha)
    assert summary is not None
    return summary


def _mismatches(sandbox: SandboxSummary, trusted: dict[str, Any]) -> list[str]:
    out = []
    for invoice_id, row in sorted(trusted["invoices"].items()):
        got = sandbox.invoices.get(invoice_id)
        found = {"currency": got.currency if got else None,
                 "refundable": got.refundable if got else None}
        for field, value in found.items():
            if str(value) != str(row[field]):
                out.append(f"{invoice_id}.{field}: sandbox {value} != {row[field]}")
        reasons = got.reasons if got else []
        if sorted(reasons) != sorted(row["reasons"]):
            out.append(f"{invoice_id}.reasons: sandbox {reasons} != {row['reasons']}")
    return out


def escalate(deps: Deps, ticket_id: int, reason: Reason, actor: str,
             payload: dict[str, Any]) -> Ticket:
    """Any non-terminal state -> ESCALATED(reason), with the evidence in the event log."""
    return tickets.transition(deps.sessions, ticket_id, State.ESCALATED, reason=reason,
                              actor=actor, payload=payload)


def trip_circuit_breaker(deps: Deps, ticket_id: int, actor: str, error: str) -> Ticket:
    """ESCALATED(circuit_breaker) with every attempt's script, error and tokens in the payload."""
    return escalate(deps, ticket_id, Reason.CIRCUIT_BREAKER, actor,
                    {"error": error, **model_trace.trace(deps, ticket_id)})


def verify_proposal(deps: Deps, ticket_id: int, analysis: Analysis, actor: str,
                    known: Ticket | None = None) -> Ticket:
    """The trusted rules must agree with the sandbox; then propose, or close with no refund.

    The rules run on rows the orchestrator read itself: those the analysis attempt read and
    sent to the sandbox as CSV (``analysis.rows``), else read afresh. ``known``: the ticket
    as the caller last committed it (``tickets.current``; its triage is what is used).
    """
    ticket = tickets.current(deps.sessions, ticket_id, known)
    tables = analysis.rows if analysis.rows is not None else scope_data(deps, ticket)
    sandbox_summary = analysis.summary
    trusted = rules_direct.trusted_summary(tables)
    mismatches = _mismatches(sandbox_summary, trusted)
    if mismatches:
        return escalate(deps, ticket_id, Reason.CROSS_CHECK_MISMATCH, actor,
                        {"mismatches": mismatches,
                         "sandbox": sandbox_summary.model_dump(mode="json"), "trusted": trusted})
    claimed = (ticket.triage or {}).get("claimed_amounts", [])
    try:
        return _propose(deps, ticket_id, trusted, tables, claimed, actor)
    except ValueError as exc:
        return escalate(deps, ticket_id, Reason.POLICY_VIOLATION, actor, {"error": str(exc)})


def _propose(deps: Deps, ticket_id: int, trusted: dict[str, Any],
             tables: dict[str, pd.DataFrame], claimed: list[str], actor: str) -> Ticket:
    """DATA_FETCHED -> ANALYZED with the proposal, made under the customer's money lock so two
    overlapping tickets never count the same money (steps/money_owed.py); a proposal with
    money to refund moves on to APPROVAL_PENDING in the same transaction (one commit for
    both moves, each with its event), any other goes on through ``advance_analyzed``."""
    commitments.prepare(deps.sessions.kw["bind"])
    with deps.sessions() as session, session.begin():
        ticket = tickets.lock(session, ticket_id, State.DATA_FETCHED)
        commitments.lock_customer(session, ticket.customer_id or "")
        proposal = money_owed.propose(session, deps.settings, ticket, trusted, tables, claimed)
        fields = money_owed.ticket_fields(deps.settings, proposal)
        tickets.move_within(session, ticket, State.ANALYZED, actor=actor, fields=fields,
                            payload={"reconciliation": trusted, "proposal": fields["proposal"],
                                     "proposal_hash": fields["proposal_hash"]})
        if Proposal.model_validate(ticket.proposal).total() != Decimal(0):
            payload, pending = _pending_fields(deps, ticket)
            tickets.move_within(session, ticket, State.APPROVAL_PENDING, actor=actor,
                                payload=payload, fields=pending)
    if ticket.state == State.APPROVAL_PENDING.value:
        return ticket
    return advance_analyzed(deps, ticket_id, actor, known=ticket)


def _pending_fields(deps: Deps, ticket: Ticket) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event payload and the ticket fields of the move to APPROVAL_PENDING."""
    deadline = utcnow() + timedelta(seconds=deps.settings.approval.approval_timeout_s)
    return ({"proposal_hash": ticket.proposal_hash, "approval_deadline": deadline.isoformat()},
            {"approval_deadline": deadline})


def advance_analyzed(deps: Deps, ticket_id: int, actor: str,
                     known: Ticket | None = None) -> Ticket:
    """ANALYZED -> CLOSED(no_discrepancy), DUPLICATE (everything owed is another ticket's
    already) or APPROVAL_PENDING (also used after a crash). ``known``: the ticket as the
    caller last committed it (``tickets.current``)."""
    ticket = tickets.current(deps.sessions, ticket_id, known)
    proposal = Proposal.model_validate(ticket.proposal)
    if proposal.total() == Decimal(0) and proposal.covered:
        return _covered_elsewhere(deps, ticket, proposal, actor)
    if proposal.total() == Decimal(0):
        reply = reply_for(deps, ticket, "no_discrepancy", actor)
        return tickets.transition(deps.sessions, ticket_id, State.CLOSED,
                                  reason=Reason.NO_DISCREPANCY, actor=actor,
                                  payload={"reply": reply}, fields={"reply": reply},
                                  expect=State.ANALYZED)
    payload, pending = _pending_fields(deps, ticket)
    return tickets.transition(deps.sessions, ticket_id, State.APPROVAL_PENDING, actor=actor,
                              payload=payload, fields=pending, expect=State.ANALYZED)


def _covered_elsewhere(deps: Deps, ticket: Ticket, proposal: Proposal, actor: str) -> Ticket:
    """Nothing left to propose because other tickets hold or refunded it: DUPLICATE of the
    first of them, with what each covers in the event log."""
    first = proposal.covered[0].ticket
    covered = [c.model_dump(mode="json") for c in proposal.covered]
    return tickets.transition(deps.sessions, ticket.id, State.DUPLICATE, reason=Reason.DUPLICATE,
                              actor=actor, payload={"duplicate_of": first, "covered": covered},
                              fields={"duplicate_of": tickets.parse_ticket_id(first)},
                              expect=State.ANALYZED)
