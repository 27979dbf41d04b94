"""Implementations of the CLI commands (argument parsing lives in cli.py)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from billing_recon import reports, runtime
from billing_recon.cli import emit
from billing_recon.domain.fsm import State
from billing_recon.domain.proposal import Proposal
from billing_recon.errors import ApprovalRefused, UserInputError
from billing_recon.steps import approval_gate
from billing_recon.store import ledger, tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.models import Ticket

SETTLE_AFTER_RESUME_S = 30.0


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
    from flows import runner

    _check_paths(args.emails)
    runtime.build()

    def on_update(path: str, ticket: Ticket) -> None:
        if args.json:
            emit(reports.ticket_line(path, ticket))
        else:
            refund = reports.refund_summary(ticket)
            amount = f" {refund['amount']} {refund['currency']}" if refund else ""
            print(f"{path}: {tickets.format_ticket_id(ticket.id)} {ticket.state}"
                  f"{'(' + ticket.reason + ')' if ticket.reason else ''}{amount}", flush=True)

    runner.run_emails(args.emails, args.wait, on_update)
    return 0


def approvals(args: argparse.Namespace) -> int:
    """List tickets awaiting a decision."""
    deps = runtime.build()
    pending = tickets.in_state(deps.sessions, State.APPROVAL_PENDING)
    rows = [_approval_row(t) for t in pending]
    if args.json:
        emit(rows)
        return 0
    if not rows:
        print("No ticket is awaiting a decision.")
        return 0
    print(reports.table(["ticket", "customer", "refund", "reasons", "claimed", "proposal"],
                        [[r["ticket_id"], r["customer_id"], f"{r['amount']} {r['currency']}",
                          ",".join(r["reasons"]), ",".join(r["claimed"]) or "-",
                          r["proposal_hash"][:12]] for r in rows]))
    return 0


def _approval_row(ticket: Ticket) -> dict[str, Any]:
    proposal = Proposal.model_validate(ticket.proposal)
    refund = reports.refund_summary(ticket) or {}
    return {"ticket_id": tickets.format_ticket_id(ticket.id), "customer_id": ticket.customer_id,
            "sender": ticket.sender, "amount": refund.get("amount"),
            "currency": refund.get("currency"), "reasons": refund.get("reasons", []),
            "claimed": proposal.claimed, "proposal_hash": ticket.proposal_hash,
            "deadline": ticket.approval_deadline.isoformat() if ticket.approval_deadline else None}


def approve(args: argparse.Namespace) -> int:
    """Approve a ticket, then see its refund executed (by its waiting run, or here)."""
    return _decide(args, approve=True)


def reject(args: argparse.Namespace) -> int:
    """Reject a ticket: no money moves."""
    return _decide(args, approve=False)


def _decide(args: argparse.Namespace, approve: bool) -> int:
    deps = runtime.build()
    ticket_id = tickets.parse_ticket_id(args.ticket)
    before = tickets.get(deps.sessions, ticket_id)
    digest = before.proposal_hash or ""
    if args.hash and not digest.startswith(args.hash):
        raise ApprovalRefused(f"the current proposal is {digest[:12]}, not {args.hash}")
    decision = approval_gate.Decision(approve=approve, approver=args.by, proposal_hash=digest,
                                      channel="cli", note=args.note)
    after = approval_gate.record_decision(deps, ticket_id, decision, f"cli:{args.by}")
    name = tickets.format_ticket_id(ticket_id)
    print(f"{name}: {after.state} by {args.by}", flush=True)
    final = _follow_through(before, approve, args.by, args.note)
    print(f"{name}: {final.state}{'(' + final.reason + ')' if final.reason else ''}")
    for row in _ticket_refunds(ticket_id):
        print(f"  refunded {row['amount']} {row['currency']} on {row['payment_id']} "
              f"({row['refund_id']})")
    return 0


def _follow_through(before: Ticket, approve: bool, by: str, note: str) -> Ticket:
    """Resume the run waiting on this ticket; if none is alive, run its flow here."""
    from flows import runner

    deps = runtime.build()
    form = {"approve": approve, "approver": by, "note": note,
            "proposal_hash": before.proposal_hash or ""}
    if runner.resume_waiting(before, form):
        deadline = time.monotonic() + SETTLE_AFTER_RESUME_S
        while time.monotonic() < deadline:
            ticket = tickets.get(deps.sessions, before.id)
            if ticket.state not in (State.APPROVED.value, State.REFUNDED.value):
                return ticket
            time.sleep(0.2)
    ticket = tickets.get(deps.sessions, before.id)
    if approve and ticket.state in (State.APPROVED.value, State.REFUNDED.value):
        runner.continue_ticket(before.id)
    return tickets.get(deps.sessions, before.id)


def _ticket_refunds(ticket_id: int) -> list[dict[str, Any]]:
    deps = runtime.build()
    with deps.sessions() as session:
        return [reports.refund_row(r) for r in ledger.all_refunds(session)
                if r.ticket_id == ticket_id]


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
            "decisions": [{"decision": d.decision, "approver": d.approver, "note": d.note,
                           "channel": d.channel, "code_verified": d.code_verified,
                           "proposal_hash": d.proposal_hash, "at": d.decided_at.isoformat()}
                          for d in approval_gate.decisions(deps, ticket_id)],
            "events": [reports.event_row(e) for e in tickets.events(deps.sessions, ticket_id)]}
    del data["email"]
    if args.json:
        emit(data)
        return 0
    _print_ticket(data)
    return 0


def _print_ticket(data: dict[str, Any]) -> None:
    reason = f" ({data['reason']})" if data["reason"] else ""
    print(f"{data['ticket_id']}  {data['state']}{reason}\n  from {data['sender']}: "
          f"{data['subject']}\n  key {data['ticket_key']}")
    if data["refund"]:
        print(f"  refund {data['refund']['amount']} {data['refund']['currency']} "
              f"{json.dumps(data['refund']['invoices'])} reasons {data['refund']['reasons']}")
    for d in data["decisions"]:
        print(f"  decision: {d['decision']} by {d['approver']} via {d['channel']} at {d['at']}")
    print(reports.table(["seq", "at", "event", "reason", "actor"],
                        [[str(e["seq"]), e["at"][:19], e["to"] or e["kind"], e["reason"] or "",
                          e["actor"]] for e in data["events"]]))


def refunds(args: argparse.Namespace) -> int:
    """Every refund in the ledger, loaded history included."""
    deps = runtime.build()
    with deps.sessions() as session:
        rows = [reports.refund_row(r) for r in ledger.all_refunds(session)]
    if args.json:
        emit(rows)
        return 0
    print(reports.table(["refund", "payment", "amount", "ticket", "at"],
                        [[r["refund_id"], r["payment_id"], f"{r['amount']} {r['currency']}",
                          r["ticket_id"] or "-", r["refunded_at"][:19]] for r in rows]))
    return 0


def demo(args: argparse.Namespace) -> int:
    """Seed sample data, process the sample inbox, compare with the ground truth."""
    from billing_recon.demo import run_demo

    return run_demo(Path(args.dir), args.seed, args.wait)


