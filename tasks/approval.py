"""The approval gate in Prefect: pause with a RunInput form until a valid decision arrives."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from uuid import UUID

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout, PrefectHTTPStatusError
from prefect.flow_runs import apause_flow_run, asuspend_flow_run
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_base_key
from prefect.logging import get_run_logger
from pydantic import Field

from billing_recon.domain.fsm import State
from billing_recon.errors import ApprovalRefused
from billing_recon.steps import approval_gate, evidence, presentation
from billing_recon.store import tickets
from billing_recon.store.models import Ticket
from billing_recon_tasks.context import flow_run_id, in_deployment
from billing_recon_tasks.mail import mail_on, send_mail
from billing_recon_tasks.options import ACTOR
from billing_recon_tasks.runtime import deps, in_thread

# The artifact page of the Prefect UI (the new UI; `/` redirects there).
ARTIFACT_PAGE = "/v2/artifacts/artifact/"


class ApprovalForm(RunInput):
    """The form the approver fills in the Prefect UI (or the CLI sends)."""

    approve: bool = Field(description="Switch on to approve the refund, off to reject it")
    approver: str = Field(description="Your name, as on the approver list")
    code: str = Field(default="", description="The 6-digit one-time code your authenticator "
                      "app shows for billing-recon (needed once approvers are enrolled)")
    note: str = Field(default="", description="Optional note kept with the decision")
    proposal_hash: str = Field(description="The proposal you decide on (prefilled; do not edit)")


def waiter_id() -> str:
    """Who is waiting: host and pid of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def _tables(ticket: Ticket) -> list[tuple[str, UUID]]:
    """The evidence as table artifacts: (title, artifact id) for links in the summary."""
    name, key = tickets.format_ticket_id(ticket.id), f"ticket-{ticket.id}"
    tables = [("Payments to refund", "refunds", presentation.proposal_rows(ticket)),
              ("Invoices in scope", "invoices", await in_thread(evidence.invoice_rows, deps(),
                                                                ticket)),
              ("Reconciliation", "reconciliation",
               await in_thread(evidence.reconciliation_rows, deps(), ticket))]
    links = []
    for title, suffix, rows in tables:
        artifact_id = await acreate_table_artifact(rows, key=f"{key}-{suffix}",
                                                   description=f"{name}: {title.lower()}")
        links.append((title, artifact_id))
    return links


def _links(links: list[tuple[str, UUID]]) -> str:
    """Markdown links to the artifacts' pages in the Prefect UI."""
    return "**Evidence** " + " · ".join(f"[{title}]({ARTIFACT_PAGE}{artifact_id})"
                                        for title, artifact_id in links)


async def _publish(ticket_id: int) -> tuple[str, str]:
    """Publish the evidence tables and the summary; returns (markdown, proposal hash)."""
    ticket = await in_thread(tickets.get, deps().sessions, ticket_id)
    name = tickets.format_ticket_id(ticket_id)
    links = await _tables(ticket)
    progress = await in_thread(approval_gate.approval_count, deps(), ticket)
    markdown = presentation.proposal_markdown(
        ticket, f"billing-recon approve {name} --by NAME", progress)
    markdown = f"{markdown}\n\n{_links(links)}"
    await acreate_markdown_artifact(markdown, key=f"ticket-{ticket_id}-proposal",
                                    description=name)
    return markdown, ticket.proposal_hash or ""


def _seconds_left(ticket: Ticket, until: datetime) -> float:
    deadline = min(until, ticket.approval_deadline or until)
    return (deadline - datetime.now(UTC)).total_seconds()


def _suspend() -> bool:
    """Suspend (free the worker) when the run belongs to a deployment; else pause in-process."""
    return deps().settings.orchestration.suspend and in_deployment()


async def _answers_so_far(ticket_id: int) -> int:
    """How many form answers this ticket has consumed: the next pause key must be new.

    Counted from the ticket's log (not a loop counter) so a suspended run that re-runs from
    the top asks for the same key again and gets back the answer it was resumed with.
    """
    done = await in_thread(tickets.events, deps().sessions, ticket_id, "decision_received")
    return len(done)


async def _ask(form: type[ApprovalForm], ticket_id: int, left: float, suspend: bool,
               pause: int) -> tuple[ApprovalForm, str]:
    """The submitted form, and the base key Prefect stored it under."""
    answered = await _answers_so_far(ticket_id)
    if suspend:  # raises Pause: this process ends, the worker slot is free until a decision
        key = f"approval-{ticket_id}-{answered}"
        return (await asuspend_flow_run(wait_for_input=form, timeout=max(1, int(left)),
                                        key=key), f"suspended-{key}")
    key = f"approval-{ticket_id}-{answered}-{pause}"
    return (await apause_flow_run(wait_for_input=form, timeout=max(1, int(left)),
                                  poll_interval=deps().settings.orchestration.pause_poll_s,
                                  key=key), f"paused-{key}")


async def _forget_answer(run_id: str | None, base_key: str) -> None:
    """Delete the submitted form from Prefect once it is consumed: it holds a one-time code,
    which must not stay readable through the API while it is still valid."""
    if run_id is None:
        return
    async with get_client() as client:
        try:
            await client.delete_flow_run_input(UUID(run_id),
                                               keyset_from_base_key(base_key)["response"])
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 404:  # already gone (a re-run deleted it)
                raise


async def wait_for_decision(ticket_id: int, wait_s: float) -> bool:
    """Pause (or suspend, when deployed) until the ticket is decided.

    False when this process stops waiting first. A refused decision (not an approver, stale
    hash) is logged and the form reopens: the run goes back to Paused rather than failing
    (Prefect validates nothing for us here).
    """
    logger = get_run_logger()
    run_id = flow_run_id()
    suspend = _suspend()
    waiter = "suspended" if suspend else waiter_id()
    # A suspended run holds nothing, so it waits up to the ticket's own approval deadline.
    horizon = deps().settings.approval.approval_timeout_s if suspend else wait_s
    until = datetime.now(UTC).timestamp() + horizon
    for pause in range(1_000):
        ticket = await in_thread(tickets.get, deps().sessions, ticket_id)
        if ticket.state != State.APPROVAL_PENDING.value:
            return True
        if await in_thread(approval_gate.expire_if_due, deps(), ticket_id, ACTOR):
            return True
        left = _seconds_left(ticket, datetime.fromtimestamp(until, UTC))
        if left <= 0:
            return False
        markdown, digest = await _publish(ticket_id)  # again after each answer (four-eyes)
        await in_thread(tickets.note, deps().sessions, ticket_id, "awaiting_decision", ACTOR,
                        {"flow_run_id": run_id, "waiter": waiter, "pause": pause},
                        {"flow_run_id": run_id, "waiter": waiter})
        if pause == 0 and mail_on():  # the approvers' notice, now that the run is known
            await send_mail()
        form = ApprovalForm.with_initial_data(description=markdown, proposal_hash=digest,
                                              approve=False, approver="")
        try:
            answer, stored_as = await _ask(form, ticket_id, left, suspend, pause)
        except FlowPauseTimeout:
            continue
        await in_thread(tickets.note, deps().sessions, ticket_id, "decision_received", ACTOR,
                        {"approver": answer.approver, "approve": answer.approve})
        await _forget_answer(run_id, stored_as)  # after the note: the key is not asked again
        await _apply(ticket_id, answer, logger)
    return False


async def _apply(ticket_id: int, answer: ApprovalForm, logger: object) -> None:
    current = await in_thread(tickets.get, deps().sessions, ticket_id)
    if current.state != State.APPROVAL_PENDING.value:
        return  # decided through the CLI, which also resumed us
    decision = approval_gate.Decision(approve=answer.approve, approver=answer.approver,
                                      proposal_hash=answer.proposal_hash, channel="ui",
                                      note=answer.note, code=answer.code)
    try:
        await in_thread(approval_gate.record_decision, deps(), ticket_id, decision, "prefect-ui")
    except ApprovalRefused as exc:
        logger.warning("decision refused, waiting again: %s", exc)  # type: ignore[attr-defined]
