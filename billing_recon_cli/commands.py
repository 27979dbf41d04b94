"""Implementations of the CLI commands (argument parsing lives in main.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from billing_recon import reports, runtime
from billing_recon.domain.fsm import State
from billing_recon.domain.proposal import Proposal
from billing_recon.errors import UserInputError
from billing_recon.steps import approval_gate, presentation
from billing_recon.steps.deps import Deps
from billing_recon.store import inbox, tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.models import Ticket
from billing_recon_cli.output import emit


def load(args: argparse.Namespace) -> int:
    """Import the CSVs of a directory (all or nothing)."""
    deps = runtime.build()
    report = load_directory(deps.sessions, Path(args.data_dir))
    print(report.summary())
    return 0


def _check_paths(paths: list[str]) -> None:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UserInputError(f"no such email file: {', '.join(missing)}")


def process(args: argparse.Namespace) -> int:
    """Run each email's ticket flow; report tickets as they become pending or end."""
    from billing_recon_cli import driver

    if not args.emails and not args.imap:
        raise UserInputError("process needs .eml files or --imap")
    _check_paths(args.emails)
    deps = runtime.build()

    def on_update(path: str, ticket: Ticket) -> None:
        problem = inbox.refusal(deps.sessions, ticket)  # an email refused at intake: why
        if args.json:
            line = reports.ticket_line(path, ticket)
            emit({**line, "problem": problem} if problem else line)
        else:
            refund = reports.refund_summary(ticket)
            amount = f" {refund['amount']} {refund['currency']}" if refund else ""
            print(f"{path}: {tickets.format_ticket_id(ticket.id)} {ticket.state}"
                  f"{'(' + ticket.reason + ')' if ticket.reason else ''}{amount}"
                  f"{': ' + problem if problem else ''}", flush=True)

    def on_problem(path: str, ticket: Ticket, problem: dict[str, Any]) -> None:
        if args.json:
            emit({**reports.ticket_line(path, ticket), **problem})
        else:
            what = problem.get("error") or f"waiting: {problem.get('waiting')}"
            print(f"{path}: {tickets.format_ticket_id(ticket.id)} stays {ticket.state} "
                  f"({what}); processing the email again resumes it", flush=True)

    def on_waiting(path: str, ticket: Ticket, link: str) -> None:
        if args.json:
            emit({**reports.ticket_line(path, ticket), "ui_url": link})
        else:
            print(f"{path}: {tickets.format_ticket_id(ticket.id)} awaits a decision; approve "
                  f"or reject it in the Prefect UI: {link}", flush=True)

    if args.emails:
        driver.run_emails(args.emails, args.wait, on_update, on_problem, on_waiting)
    if args.imap:
        driver.run_mailbox(args.wait, on_update, on_problem, on_waiting)
    return 0


def approvals(args: argparse.Namespace) -> int:
    """List tickets awaiting a decision."""
    deps = runtime.build()
    pending = tickets.in_state(deps.sessions, State.APPROVAL_PENDING)
    rows = [_approval_row(deps, t) for t in pending]
    if args.json:
        emit(rows)
        return 0
    if not rows:
        print("No ticket is awaiting a decision.")
        return 0
    print(reports.table(["ticket", "customer", "refund", "reasons", "claimed", "proposal",
                         "approvals"],
                        [[r["ticket_id"], r["customer_id"], f"{r['amount']} {r['currency']}",
                          ",".join(r["reasons"]), ",".join(r["claimed"]) or "-",
                          r["proposal_hash"][:12],
                          f"{len(r['approvals']['approved_by'])}/{r['approvals']['required']}"]
                         for r in rows]))
    return 0


def _approval_row(deps: Deps, ticket: Ticket) -> dict[str, Any]:
    proposal = Proposal.model_validate(ticket.proposal)
    refund = reports.refund_summary(ticket) or {}
    return {"ticket_id": tickets.format_ticket_id(ticket.id), "customer_id": ticket.customer_id,
            "sender": ticket.sender, "amount": refund.get("amount"),
            "currency": refund.get("currency"), "reasons": refund.get("reasons", []),
            "claimed": proposal.claimed, "proposal_hash": ticket.proposal_hash,
            "held_elsewhere": [presentation.covered_line(c) for c in proposal.covered],
            "deadline": ticket.approval_deadline.isoformat() if ticket.approval_deadline else None,
            "approvals": _approvals(deps, ticket)}


def show_ticket(args: argparse.Namespace) -> int:
    """State, proposal, decisions and the full event log of a ticket."""
    deps = runtime.build()
    ticket_id = tickets.parse_ticket_id(args.ticket)
    ticket = tickets.get(deps.sessions, ticket_id)
    data = {**reports.ticket_line("", ticket), "sender": ticket.sender,
            "subject": ticket.subject, "customer_id": ticket.customer_id,
            "scope": ticket.scope, "triage": ticket.triage, "proposal": ticket.proposal,
            "proposal_hash": ticket.proposal_hash, "reply": ticket.reply,
            "duplicate_of": tickets.format_ticket_id(ticket.duplicate_of)
            if ticket.duplicate_of else None,
            "decisions": [reports.decision_row(d)
                          for d in approval_gate.decisions(deps, ticket_id)],
            "approvals": _approvals(deps, ticket),
            "events": [reports.event_row(e) for e in tickets.events(deps.sessions, ticket_id)]}
    del data["email"]
    if args.json:
        emit(data)
        return 0
    _print_ticket(data)
    return 0


def _approvals(deps: Deps, ticket: Ticket) -> dict[str, Any]:
    progress = approval_gate.approval_count(deps, ticket)
    return {"required": progress.required, "approved_by": list(progress.approved_by),
            "codes_required": progress.codes}


def _print_ticket(data: dict[str, Any]) -> None:
    reason = f" ({data['reason']})" if data["reason"] else ""
    print(f"{data['ticket_id']}  {data['state']}{reason}\n  from {data['sender']}: "
          f"{data['subject']}\n  key {data['ticket_key']}")
    if data["refund"]:
        print(f"  refund {data['refund']['amount']} {data['refund']['currency']} "
              f"{json.dumps(data['refund']['invoices'])} reasons {data['refund']['reasons']}")
    held = Proposal.model_validate(data["proposal"]).covered if data["proposal"] else []
    for covered in held:
        print(f"  already held elsewhere: {presentation.covered_line(covered)}")
    if data["duplicate_of"]:
        print(f"  duplicate of {data['duplicate_of']}")
    for d in data["decisions"]:
        print(f"  decision: {reports.decision_text(d)}")
    if data["approvals"]["required"] > 1:
        print(f"  four-eyes (frozen on the proposal): {len(data['approvals']['approved_by'])} "
              f"of {data['approvals']['required']} approvals")
    print(reports.table(["seq", "at", "event", "reason", "actor"],
                        [[str(e["seq"]), e["at"][:19], e["to"] or e["kind"], e["reason"] or "",
                          e["actor"]] for e in data["events"]]))


def demo(args: argparse.Namespace) -> int:
    """Seed sample data, process the sample inbox, compare with the ground truth."""
    from billing_recon_cli.demo import run_demo

    return run_demo(Path(args.dir), args.seed, args.wait)


