"""The ``refunds`` commands: the ledger with each refund's status, and the sweep (``sync``)."""

from __future__ import annotations

import argparse
import sys

from billing_recon import reports, runtime
from billing_recon.domain.fsm import State
from billing_recon.steps import refund_status, refund_sync
from billing_recon.store import ledger, tickets
from billing_recon_cli.output import emit


def refunds(args: argparse.Namespace) -> int:
    """Every refund in the ledger, loaded history included (or ``refunds sync``)."""
    if getattr(args, "refunds_command", None) == "sync":
        return sync_refunds(args)
    if getattr(args, "refunds_command", None) == "retry":
        return retry_refund(args)
    deps = runtime.build()
    with deps.sessions() as session:
        rows = [reports.refund_row(r) for r in ledger.all_refunds(session)]
    if args.json:
        emit(rows)
        return 0
    print(reports.table(["refund", "payment", "amount", "ticket", "at", "status"],
                        [[r["refund_id"], r["payment_id"], f"{r['amount']} {r['currency']}",
                          r["ticket_id"] or "-", r["refunded_at"][:19],
                          r["status"] + (f" ({r['failure_reason']})" if r["failure_reason"]
                                         else "")] for r in rows]))
    return 0


def sync_refunds(args: argparse.Namespace) -> int:
    """The sweep: every refund that may still change re-read from the gateway and applied."""
    report = refund_sync.sync_once(runtime.build())
    moved = {tickets.format_ticket_id(t): state for t, state in sorted(report.moved.items())}
    if args.json:
        emit({"checked": report.checked, "changed": report.changed, "tickets": moved,
              "errors": report.errors})
    else:
        print(f"{report.checked} refunds re-read, {report.changed} changed status")
        for name, state in moved.items():
            print(f"  {name} is now {state}")
        for error in report.errors:
            print(f"  not read (the next sync retries it): {error}", file=sys.stderr)
    return 0


def retry_refund(args: argparse.Namespace) -> int:
    """Re-open a ticket escalated for a failed refund and run it to its new approval."""
    from billing_recon_cli import driver

    deps = runtime.build()
    ticket_id = tickets.parse_ticket_id(args.ticket)
    refund_status.reopen_for_retry(deps, ticket_id, f"cli:{args.by}", args.note)
    driver.continue_ticket(ticket_id)
    ticket = tickets.get(deps.sessions, ticket_id)
    name = tickets.format_ticket_id(ticket_id)
    print(f"{name}: {ticket.state}{'(' + ticket.reason + ')' if ticket.reason else ''}")
    if ticket.state == State.APPROVAL_PENDING.value:
        summary = reports.refund_summary(ticket) or {}
        print(f"  proposed again: {summary.get('amount')} {summary.get('currency')}; a fresh "
              f"approval is needed (billing-recon approve {name} --by NAME --code CODE)")
    return 0
