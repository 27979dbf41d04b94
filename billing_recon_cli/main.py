"""The ``billing-recon`` command (SPEC §8): arguments, exit codes, the environment it sets.

Commands that run flows import Prefect's side (flows, tasks, blocks, the driver) lazily, so
commands that only read the database (``tickets show``, ``refunds``) start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from billing_recon.config import load
from billing_recon.errors import BillingReconError, UserInputError

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # offline machines: no telemetry calls
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",  # stdout stays clean for --json; -v shows flow logs
    # The temporary server takes 10-30 s to start on a loaded 2-core machine; Prefect's 20 s
    # default made `demo` fail now and then there (seen in the suite, old and new code alike).
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


#: Commands that talk to a Prefect server: without PREFECT_API_URL they use the managed local
#: one (started if needed) unless BILLING_RECON_PREFECT_SERVER=temporary.
NEEDS_PREFECT = {"demo", "process", "approve", "reject", "blocks"}


#: The demo's local gateway makes every refund start pending (as a bank debit does) and settle
#: a moment later, so an approval shows the refund's whole lifecycle. A value the user set
#: wins; BILLING_RECON_GATEWAY_FAILURE_SHARE=1 makes the refunds fail and escalate instead.
DEMO_DEFAULTS = {"BILLING_RECON_GATEWAY_PENDING_SHARE": "1"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="billing-recon", description=__doc__.splitlines()[0])
    p.add_argument("--db", help="database URL (default: BILLING_RECON_DATABASE_URL or "
                   "sqlite:///billing_recon.db)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Prefect flow logs")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="seed sample data, process the sample inbox, "
                          "show pending approvals")
    demo.add_argument("--dir", default="demo", help="where the sample data goes (./demo)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--wait", type=float, default=300.0,
                      help="seconds to wait for decisions after the table (default 300)")
    load = sub.add_parser("load", help="import the CSV files of a directory")
    load.add_argument("data_dir")
    proc = sub.add_parser("process", help="run the ticket flow for each .eml file")
    proc.add_argument("emails", nargs="*", metavar="EML")
    proc.add_argument("--imap", action="store_true", help="take the new messages of the "
                      "IMAP mailbox (BILLING_RECON_IMAP_*) instead of files")
    proc.add_argument("--json", action="store_true", help="one JSON object per line")
    proc.add_argument("--wait", type=float, default=600.0,
                      help="seconds to wait for pending decisions (default 600)")
    apps = sub.add_parser("approvals", help="list tickets awaiting a decision")
    apps.add_argument("--json", action="store_true")
    _decision_parsers(sub)
    _approver_parsers(sub)
    _mail_parsers(sub)
    tick = sub.add_parser("tickets", help="inspect tickets")
    tsub = tick.add_subparsers(dest="tickets_command", required=True)
    show = tsub.add_parser("show", help="state, proposal and full event log")
    show.add_argument("ticket", metavar="TICKET")
    show.add_argument("--json", action="store_true")
    refunds = sub.add_parser("refunds", help="refunds in the ledger; `refunds sync` re-reads "
                             "those whose status may still change")
    refunds.add_argument("--json", action="store_true")
    rsub = refunds.add_subparsers(dest="refunds_command")
    sync = rsub.add_parser("sync", help="re-read every refund that is not final from the "
                           "gateway and settle its ticket (lost webhooks)")
    sync.add_argument("--json", action="store_true")
    retry = rsub.add_parser("retry", help="re-open a ticket escalated for a failed refund: it "
                            "is analysed and proposed again and needs a fresh approval")
    retry.add_argument("ticket", metavar="TICKET")
    retry.add_argument("--by", required=True, metavar="NAME", help="who retries it (logged)")
    retry.add_argument("--note", default="", metavar="TEXT")
    server = sub.add_parser("server", help="the local Prefect server with its UI (and its "
                            "runners) that commands start when PREFECT_API_URL is unset")
    ssub = server.add_subparsers(dest="server_command", required=True)
    for name, what in (("start", "start it unless it runs; print its URL and UI"),
                       ("status", "whether it runs: URL, pid, UI, runners"),
                       ("stop", "stop it and its runners (by pid)")):
        ssub.add_parser(name, help=what).add_argument("--json", action="store_true")
    _eval_parser(sub)
    blocks = sub.add_parser("blocks", help="Prefect blocks holding the configuration")
    bsub = blocks.add_subparsers(dest="blocks_command", required=True)
    breg = bsub.add_parser("register", help="register the block types and save a block set "
                           "from the current environment and defaults")
    breg.add_argument("--name", default="default", help="block set name (default: default)")
    breg.add_argument("--overwrite", action="store_true", help="replace existing blocks")
    return p


def _eval_parser(sub: Any) -> None:
    from billing_recon_cli.eval_commands import add_parser

    add_parser(sub)


def _decision_parsers(sub: Any) -> None:
    for name in ("approve", "reject"):
        d = sub.add_parser(name, help=f"{name} proposed refunds (one code may decide several)")
        d.add_argument("tickets", nargs="+", metavar="TICKET")
        d.add_argument("--by", required=True, metavar="NAME", help="approver name")
        d.add_argument("--code", default="", metavar="CODE",
                       help="the approver's current one-time code (authenticator app)")
        d.add_argument("--note", default="", metavar="TEXT")
        d.add_argument("--hash", default=None, metavar="PREFIX",
                       help="refuse unless the current proposal hash starts with PREFIX")


def _mail_parsers(sub: Any) -> None:
    """The `mail` subcommands."""
    mail = sub.add_parser("mail", help="the IMAP mailbox and the outbox of replies and notices")
    msub = mail.add_subparsers(dest="mail_command", required=True)
    fetch_p = msub.add_parser("fetch", help="open a ticket for every new message of the "
                              "mailbox (intake only; `process --imap` also runs them)")
    fetch_p.add_argument("--json", action="store_true")
    send_p = msub.add_parser("send", help="queue the replies and notices owed and send them, "
                             "each once")
    send_p.add_argument("--json", action="store_true")
    list_p = msub.add_parser("list", help="the outbox: every message and its status")
    list_p.add_argument("--json", action="store_true")
    again = msub.add_parser("resend", help="send an uncertain or failed message again, after "
                            "checking the customer did not get it")
    again.add_argument("key", metavar="KEY", help="its outbox key (`mail list`)")


def _approver_parsers(sub: Any) -> None:
    reg = sub.add_parser("approvers", help="the approver registry: bootstrap the first "
                         "administrator; enroll, disable, enable, reset, unlock; list, audit")
    asub = reg.add_subparsers(dest="approvers_command", required=True)
    boot = _approvers_parser(asub, "bootstrap-admin", "enroll the first administrator (only "
                             "while there is none); prints the authenticator URI once")
    boot.add_argument("--email", required=True, metavar="ADDR")
    _secret_options(boot)
    boot.add_argument("--code-file", default=None, metavar="PATH", help="promoting an "
                      "enrolled approver: their one-time code from PATH (- reads stdin); "
                      "else asked on the terminal")
    add = _approvers_parser(asub, "add", "enroll an approver; prints the authenticator URI",
                            admin=True)
    add.add_argument("--email", required=True, metavar="ADDR")
    add.add_argument("--role", default="approver", choices=("approver", "admin", "demo"),
                     help="approver (default); admin: may change the registry; demo: its "
                     "code is printable, for the demo only")
    _secret_options(add)
    _secret_options(_approvers_parser(asub, "reset", "enroll a new TOTP secret for NAME "
                                      "(lost device); prints the URI", admin=True))
    for name, what in (("disable", "disable NAME: it decides nothing"),
                       ("enable", "enable NAME again"),
                       ("unlock", "lift NAME's lockout after too many wrong codes")):
        _approvers_parser(asub, name, what, admin=True)
    asub.add_parser("code", help="print the current code of a demo approver").add_argument(
        "name", metavar="NAME")
    listing = asub.add_parser("list", help="enrolled approvers (never their secrets)")
    listing.add_argument("--json", action="store_true")
    audit = asub.add_parser("audit", help="every change of the registry, wrong code, lockout "
                            "and unlock, oldest first")
    audit.add_argument("name", nargs="?", default=None, metavar="NAME")
    audit.add_argument("--json", action="store_true")


def _approvers_parser(asub: Any, name: str, what: str,
                      admin: bool = False) -> argparse.ArgumentParser:
    """A registry command on NAME; ``admin``: authorised by --admin and that admin's code.
    No abbreviations: ``--code`` must not silently mean ``--code-file``."""
    cmd: argparse.ArgumentParser = asub.add_parser(name, help=what, allow_abbrev=False)
    cmd.add_argument("name", metavar="NAME")
    if admin:
        cmd.add_argument("--admin", required=True, metavar="ADMIN",
                         help="the administrator authorising the change")
        cmd.add_argument("--code-file", default=None, metavar="PATH",
                         help="the administrator's one-time code from PATH (- reads stdin); "
                         "else asked on the terminal")
    return cmd


def _secret_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--totp-secret-file", default=None, metavar="PATH",
                     help="enroll the base32 secret in PATH (- reads stdin) instead of a new "
                     "random one")
    cmd.add_argument("--totp-secret", default=None, help=argparse.SUPPRESS)  # refused: ps


def _environment(args: argparse.Namespace) -> None:
    if args.db:
        os.environ["BILLING_RECON_DATABASE_URL"] = args.db
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if args.verbose:
        os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    if args.command == "demo" and "pending_share" not in load().gateway.lifecycle.model_fields_set:
        os.environ.update(DEMO_DEFAULTS)
    if args.command in NEEDS_PREFECT:  # the managed local server, unless PREFECT_API_URL
        from billing_recon_tasks import local_server

        local_server.use(load())
    if load().orchestration.blocks:
        # The commands then use the same block set as the flows (Prefect's side, lazily).
        from billing_recon import runtime
        from billing_recon_tasks.runtime import block_settings

        runtime.use_settings_from(block_settings)


def _blocks(args: argparse.Namespace) -> int:
    # Imported here: the blocks package is Prefect's side, the core stays importable without it.
    from billing_recon_blocks.registration import register
    from billing_recon_tasks.temporary_server import ensure_api

    ensure_api()
    return register(args.name, args.overwrite)


def _server(args: argparse.Namespace) -> int:
    from billing_recon_cli.server_commands import server_cmd

    return server_cmd(args)


def _handler(command: str) -> Callable[[argparse.Namespace], int]:
    from billing_recon_cli import (
        approver_commands,
        commands,
        decision_commands,
        eval_commands,
        mail_commands,
        refund_commands,
    )

    return {"demo": commands.demo, "load": commands.load, "process": commands.process,
            "approvals": commands.approvals, "approve": decision_commands.approve,
            "reject": decision_commands.reject, "tickets": commands.show_ticket,
            "refunds": refund_commands.refunds, "blocks": _blocks, "server": _server,
            "approvers": approver_commands.approvers_cmd,
            "eval": eval_commands.evaluate_cmd, "mail": mail_commands.mail_cmd}[command]


def _one_line(error: BaseException | None) -> str:
    """A driver's error message, which may span lines, as one line."""
    return " ".join(str(error).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit 0 on success, 1 on a refused action, 2 on input the user must fix."""
    args = _parser().parse_args(argv)
    try:
        _environment(args)  # before Prefect is imported: it reads its settings at import
        return _handler(args.command)(args)
    except UserInputError as exc:
        print(f"billing-recon: error: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        print(f"billing-recon: error: cannot reach the database: {_one_line(exc.orig)}",
              file=sys.stderr)
        return 2
    except DBAPIError as exc:
        if exc.statement is not None:  # a statement failed: not the user's to fix
            raise
        # no statement yet: the driver refused the URL's options (?bogus=1)
        print(f"billing-recon: error: cannot connect to the database: {_one_line(exc.orig)}",
              file=sys.stderr)
        return 2
    except BillingReconError as exc:
        print(f"billing-recon: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: tickets keep their last committed state", file=sys.stderr)
        return 130
