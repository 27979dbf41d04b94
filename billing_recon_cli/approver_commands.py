"""``billing-recon approvers``: the approver registry (enrol, disable, enable, list, audit, and
a demo approver's current code)."""

from __future__ import annotations

import argparse
import getpass
import json
import time

from billing_recon import reports, runtime
from billing_recon.domain import totp
from billing_recon.errors import UserInputError
from billing_recon.store import approvers, code_attempts
from billing_recon_cli.output import emit


def _actor() -> str:
    """Who changes the registry: the operating-system user running the command."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (containers)
        return "cli:unknown"


def approvers_cmd(args: argparse.Namespace) -> int:
    """``approvers add|disable|enable|list|audit|code``: the approver registry."""
    handler = {"add": _approver_add, "disable": _approver_switch, "enable": _approver_switch,
               "list": _approver_list, "audit": _approver_audit,
               "code": _approver_code}[args.approvers_command]
    return handler(args)


def _approver_add(args: argparse.Namespace) -> int:
    deps = runtime.build()
    secret = totp.normalise_secret(args.totp_secret) if args.totp_secret else totp.new_secret()
    row = approvers.add(deps.sessions, deps.settings.approver_key(), name=args.name,
                        email=args.email, role=args.role, secret=secret, actor=_actor())
    print(f"Enrolled {row.name} ({row.role}, {row.email}).\n"
          "Add this to the approver's authenticator app (it holds the secret: show it to "
          "nobody else, keep no copy):", flush=True)
    print(totp.provisioning_uri(secret, row.name), flush=True)
    if row.role == approvers.DEMO_ROLE:
        print(f"Demo approver: `billing-recon approvers code {row.name}` prints its code.")
    return 0


def _approver_switch(args: argparse.Namespace) -> int:
    deps = runtime.build()
    enable = args.approvers_command == "enable"
    changed = approvers.set_enabled(deps.sessions, args.name, enable, _actor())
    state = "enabled" if enable else "disabled"
    print(f"{args.name} is {state}" if changed else f"{args.name} was already {state}")
    return 0


def _approver_list(args: argparse.Namespace) -> int:
    deps = runtime.build()
    rows = [reports.approver_row(a) for a in approvers.all_approvers(deps.sessions)]
    if args.json:
        emit(rows)
        return 0
    if not rows:
        names = ", ".join(deps.settings.approval.approvers) or "nobody"
        print("No approver is enrolled: " + (
            "no decision counts (BILLING_RECON_REQUIRE_CODE is set)"
            if deps.settings.approval.require_code
            else f"the configured names decide without a code ({names})."))
        return 0
    print(reports.table(["name", "email", "role", "enabled", "locked out", "since"],
                        [[r["name"], r["email"], r["role"], "yes" if r["enabled"] else "no",
                          r["locked_at"][:19] if r["locked_at"] else "no",
                          r["created_at"][:10]] for r in rows]))
    return 0


def _approver_audit(args: argparse.Namespace) -> int:
    deps = runtime.build()
    rows = [reports.audit_row(a) for a in approvers.audit(deps.sessions, args.name)]
    if args.json:
        emit(rows)
        return 0
    print(reports.table(["at", "approver", "action", "by", "details"],
                        [[r["at"][:19], r["approver"], r["action"], r["actor"],
                          json.dumps(r["details"], sort_keys=True)] for r in rows]))
    return 0


def _approver_code(args: argparse.Namespace) -> int:
    """A demo approver's code, and only theirs (a real one's lives on their device): the
    current one, or the next step's (valid already) when the current one was used."""
    deps = runtime.build()
    row = approvers.get(deps.sessions, args.name)
    if row is None or row.role != approvers.DEMO_ROLE:
        raise UserInputError(f"{args.name!r} is not a demo approver: read the code from the "
                             "authenticator app it was enrolled in")
    now = time.time()
    at = next((t for t in (now, now + totp.STEP_S) if not code_attempts.spent(
        deps.sessions, row.name, totp.time_step(t))), now)
    print(totp.code_at(approvers.secret_of(deps.settings.approver_key(), row), at))
    return 0
