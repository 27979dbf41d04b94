"""``approve`` and ``reject``: record the decision, then see the waiting run carry it on.

The decision is recorded here with all its checks (approver, one-time code, proposal hash,
four-eyes). Then the run waiting on the ticket is resumed (billing_recon_cli.waiting): a run
suspended on a work pool or on the local runner is theirs to carry on; a run paused in a live
process refunds there; with nobody waiting, the local runner is handed a new run of the ticket,
or (temporary server) the ticket's flow runs in this command.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from billing_recon import reports, runtime
from billing_recon.domain.fsm import Reason, State
from billing_recon.errors import ApprovalRefused, UserInputError
from billing_recon.steps import approval_gate, approver_identity, presentation
from billing_recon.steps.deps import Deps
from billing_recon.store import ledger, tickets
from billing_recon.store.models import Ticket
from billing_recon_cli import waiting
from billing_recon_tasks import local_server

SETTLE_AFTER_RESUME_S = 30.0


def approve(args: argparse.Namespace) -> int:
    """Approve a ticket, then see its refund executed (by its waiting run, or here)."""
    return _decide(args, approve=True)


def reject(args: argparse.Namespace) -> int:
    """Reject a ticket: no money moves."""
    return _decide(args, approve=False)


def _decide(args: argparse.Namespace, approve: bool) -> int:
    """Decide each ticket in turn; 1 if any was refused.

    The code is checked and spent once for the whole command (one use however many tickets
    it decides); a wrong one refuses them all and counts once towards the lockout.
    """
    ids = [tickets.parse_ticket_id(t) for t in args.tickets]
    if args.hash and len(ids) > 1:
        raise UserInputError("--hash checks one proposal: give exactly one TICKET with it")
    deps = runtime.build()
    for ticket_id in ids:  # before the code is spent: a server refusing us, a changed proposal
        _preflight(args, tickets.get(deps.sessions, ticket_id))
    proof = approver_identity.prove(deps, args.by, args.code or "", f"cli:{args.by}",
                                    {"channel": "cli", "tickets": args.tickets})
    if len(ids) == 1:
        _decide_one(args, ids[0], approve, proof)
        return 0
    refused = 0
    for ticket_id in ids:
        try:
            _decide_one(args, ticket_id, approve, proof)
        except ApprovalRefused as exc:  # the others are still decided
            print(f"billing-recon: {exc}", file=sys.stderr, flush=True)
            refused += 1
    return 1 if refused else 0


def _preflight(args: argparse.Namespace, ticket: Ticket) -> None:
    waiting.check_server_access(ticket)
    digest = ticket.proposal_hash or ""
    if args.hash and not digest.startswith(args.hash):
        raise ApprovalRefused(f"the current proposal is {digest[:12]}, not {args.hash}")


def _decide_one(args: argparse.Namespace, ticket_id: int, approve: bool,
                proof: approver_identity.Identity) -> None:
    deps = runtime.build()
    before = tickets.get(deps.sessions, ticket_id)
    _preflight(args, before)
    decision = approval_gate.Decision(approve=approve, approver=args.by,
                                      proposal_hash=before.proposal_hash or "", channel="cli",
                                      note=args.note, code=args.code or "")
    outcome = approval_gate.decide(deps, ticket_id, decision, f"cli:{args.by}", proof)
    name, after = tickets.format_ticket_id(ticket_id), outcome.ticket
    count = presentation.approvals_line(approval_gate.approval_count(deps, after))
    done = "by" if outcome.counted else "(already recorded, counted once) by"
    print(f"{name}: {after.state} {done} {args.by}{'; ' + count if count else ''}", flush=True)
    final = _follow_through(before, decision)
    print(f"{name}: {final.state}{'(' + final.reason + ')' if final.reason else ''}")
    for row in _ticket_refunds(ticket_id):
        done = row["status"] == "succeeded"
        status = "" if done else f": {row['status']}" + (
            f" ({row['failure_reason']})" if row["failure_reason"] else "")
        print(f"  {'refunded' if done else 'refund'} {row['amount']} {row['currency']} on "
              f"{row['payment_id']} ({row['refund_id']}){status}")
    _check_outcome(deps, before, final, approve)


#: Where a decision may leave its ticket without anything having gone wrong: refunded (or on
#: its way, on a work pool's worker), waiting for a second approver, or rejected.
_DECIDED = {True: {State.REFUNDED.value, State.CLOSED.value, State.APPROVAL_PENDING.value},
            False: {State.REJECTED_BY_APPROVER.value}}


def _check_outcome(deps: Deps, before: Ticket, final: Ticket, approve: bool) -> None:
    """Exit non-zero, saying why, when the decision did not lead where it should (SPEC §8)."""
    if final.state in _DECIDED[approve] or (approve and (before.waiter == waiting.SUSPENDED
                                                         or local_server.in_use())):
        return  # a worker or the local runner carries it on
    events = tickets.events(deps.sessions, final.id)
    why = next((e.payload.get("error") or e.payload.get("gateway_error") for e in
                reversed(events) if e.payload.get("error") or e.payload.get("gateway_error")),
               None)
    state = f"{final.state}({final.reason})" if final.reason else final.state
    what = ("the refund failed at the gateway" if final.reason == Reason.REFUND_FAILED.value
            else "no refund was made")
    raise ApprovalRefused(f"{tickets.format_ticket_id(final.id)}: the approval was recorded but "
                          f"{what}: the ticket is {state}{': ' + str(why) if why else ''}")


def _follow_through(before: Ticket, decision: approval_gate.Decision) -> Ticket:
    """Resume the run waiting on this ticket; if none is alive, run its flow here.

    A run suspended on a work pool is only resumed: the pool's workers own it.

    After a first of two approvals the run is resumed too: it finds the approval recorded
    (the same code: a repeat, not a new decision) and asks again, showing 1 of 2.
    """
    deps = runtime.build()
    name = tickets.format_ticket_id(before.id)
    form = {"approve": decision.approve, "approver": decision.approver, "note": decision.note,
            "code": decision.code, "proposal_hash": before.proposal_hash or ""}
    managed = local_server.in_use()
    if waiting.resume_waiting(before, form):
        if before.waiter == waiting.SUSPENDED:
            # A worker (deployed) or the local runner re-runs the ticket; running it here too
            # would only race it.
            who = "the local runner" if managed else "a worker of the pool"
            print(f"{name}: its suspended run was resumed; {who} carries it on", flush=True)
            return tickets.get(deps.sessions, before.id)
        deadline = time.monotonic() + SETTLE_AFTER_RESUME_S
        while time.monotonic() < deadline:
            ticket = tickets.get(deps.sessions, before.id)
            if ticket.state not in (State.APPROVED.value, State.REFUNDED.value):
                return ticket
            time.sleep(0.2)
    ticket = tickets.get(deps.sessions, before.id)
    if decision.approve and ticket.state in (State.APPROVED.value, State.REFUNDED.value):
        if managed is not None:  # nobody waits on it: a new run, which the runner executes
            run_id = waiting.run_on_runner(managed.runner.deployment, before.id)
            print(f"{name}: the local runner carries it on: "
                  f"{local_server.run_link(managed.server.ui_url, run_id)}", flush=True)
            return ticket
        from billing_recon_cli import driver

        driver.continue_ticket(before.id)
    deadline = time.monotonic() + SETTLE_AFTER_RESUME_S
    while time.monotonic() < deadline:  # a refund still pending: our webhook receiver ends it
        ticket = tickets.get(deps.sessions, before.id)
        if ticket.state != State.REFUNDED.value:
            break
        time.sleep(0.2)
    return ticket


def _ticket_refunds(ticket_id: int) -> list[dict[str, Any]]:
    deps = runtime.build()
    with deps.sessions() as session:
        return [reports.refund_row(r) for r in ledger.all_refunds(session)
                if r.ticket_id == ticket_id]
