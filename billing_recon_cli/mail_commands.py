"""`billing-recon mail ...`: take the IMAP mailbox, send the outbox, list it, resend a message."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from billing_recon import runtime
from billing_recon.errors import UserInputError
from billing_recon.steps import mailbox, outbox
from billing_recon.store import outbox as outbox_store
from billing_recon.store import tickets
from billing_recon_cli.output import emit


def _ids(ids: list[int]) -> list[str]:
    return [tickets.format_ticket_id(i) for i in ids]


def fetch(args: argparse.Namespace) -> int:
    """Open a ticket for every new message of the mailbox (no flow runs): intake only."""
    deps = runtime.build()

    def progress(done: int, total: int) -> None:
        print(f"mailbox: {done} of {total} messages taken", file=sys.stderr, flush=True)

    report = mailbox.take_mailbox(deps, progress)
    out = {"folder": report.folder, "uidvalidity": report.uidvalidity,
           "uidvalidity_was": report.uidvalidity_was, "messages": report.seen,
           "opened": _ids(report.opened), "rejected": _ids(report.rejected),
           "known": _ids(report.known)}
    if args.json:
        emit(out)
        return 0
    print(f"{report.folder}: {report.seen} messages, {len(report.opened)} new tickets "
          f"({len(report.rejected)} refused at intake), {len(report.known)} found again")
    if report.uidvalidity_was is not None:
        print(f"UIDVALIDITY changed from {report.uidvalidity_was} to {report.uidvalidity}: "
              "the folder was read again; no ticket was opened twice")
    return 0


def _ui_url() -> str | None:
    from prefect.settings import PREFECT_UI_URL  # the CLI's layer: Prefect knows the UI URL

    return PREFECT_UI_URL.value() or None


def send(args: argparse.Namespace) -> int:
    """Queue the replies and notices owed, send what is queued; exit 1 if any was not sent."""
    deps = runtime.build()
    if not deps.settings.smtp.host:
        raise UserInputError("no SMTP server is configured (BILLING_RECON_SMTP_HOST)")
    queued = outbox.queue_due(deps, _ui_url())
    done = outbox.deliver(deps)
    out: dict[str, Any] = {"queued": queued, "sent": done.sent, "deferred": done.deferred,
                           "failed": done.failed, "uncertain": done.uncertain,
                           "error": done.error}
    if args.json:
        emit(out)
    else:
        for name, keys in out.items():
            if name != "error" and keys:
                print(f"{name}: {', '.join(keys)}")
        if done.error:
            print(f"error: {done.error}", file=sys.stderr)
    return 1 if done.deferred or done.failed or done.uncertain else 0


def listing(args: argparse.Namespace) -> int:
    """Every message of the outbox and what became of it."""
    deps = runtime.build()
    rows: list[dict[str, Any]] = [
        {"key": r.key, "kind": r.kind, "ticket": tickets.format_ticket_id(r.ticket_id),
         "to": r.recipients, "message_id": r.message_id, "status": r.status,
         "attempts": r.attempts, "sent_at": r.sent_at.isoformat() if r.sent_at else None,
         "error": r.error} for r in outbox_store.rows(deps.sessions)]
    if args.json:
        emit(rows)
        return 0
    for row in rows:
        print(f"{row['ticket']}  {row['status']:<9} {row['kind']:<15} {row['key']}"
              f"{'  ' + row['error'] if row['error'] else ''}")
    return 0


def resend(args: argparse.Namespace) -> int:
    """An operator's decision: send an uncertain or failed message again (same Message-ID)."""
    deps = runtime.build()
    if not outbox_store.requeue(deps.sessions, args.key):
        raise UserInputError(f"no uncertain or failed message with key {args.key!r}")
    print(f"{args.key} queued again; `billing-recon mail send` sends it")
    return 0


def mail_cmd(args: argparse.Namespace) -> int:
    """Dispatch `billing-recon mail SUBCOMMAND`."""
    return {"fetch": fetch, "send": send, "list": listing,
            "resend": resend}[args.mail_command](args)
