"""``billing-recon approvers``: the approver registry (bootstrap the first administrator;
enroll, disable, enable, reset, unlock with an administrator's code; list, audit, and a demo
approver's current code).

Secrets and codes never come from the command line (every user sees it in ``ps``): a TOTP
secret is read from ``--totp-secret-file PATH`` (``-``: stdin) or made here; the
administrator's code from ``--code-file PATH`` (``-``: stdin) or a prompt on the terminal.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from billing_recon import reports, runtime
from billing_recon.domain import totp
from billing_recon.errors import UserInputError
from billing_recon.steps import approver_registry
from billing_recon.steps.approver_registry import Admin
from billing_recon.steps.deps import Deps
from billing_recon.store import approvers, code_attempts
from billing_recon.store.models import Approver
from billing_recon_cli.output import emit

STDIN = "-"


def _actor() -> str:
    """Who runs the command: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (containers)
        return "cli:unknown"


def approvers_cmd(args: argparse.Namespace) -> int:
    """``approvers ...``: the approver registry."""
    handler: Callable[[argparse.Namespace], int] = {
        "bootstrap-admin": _bootstrap_admin, "add": _approver_add, "reset": _approver_reset,
        "disable": _approver_switch, "enable": _approver_switch, "unlock": _approver_unlock,
        "list": _approver_list, "audit": _approver_audit,
        "code": _approver_code}[args.approvers_command]
    return handler(args)


def _read(path: str, what: str) -> str:
    if path == STDIN:
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read {what} from {path}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from exc


def _check_inputs(args: argparse.Namespace) -> None:
    if getattr(args, "totp_secret", None) is not None:
        raise UserInputError("--totp-secret is no more: a secret on the command line is "
                             "visible to every user of the machine (ps); use "
                             "--totp-secret-file PATH, or - to read it from stdin")
    files = [getattr(args, "totp_secret_file", None), getattr(args, "code_file", None)]
    if files.count(STDIN) > 1:
        raise UserInputError("only one of --totp-secret-file and --code-file can read stdin")


def _secret(args: argparse.Namespace) -> str:
    """The secret to enroll: read from --totp-secret-file, or a new random one."""
    if args.totp_secret_file is None:
        return totp.new_secret()
    return totp.normalise_secret(_read(args.totp_secret_file, "the TOTP secret"))


def _code(args: argparse.Namespace, whose: str) -> str:
    """A one-time code: from --code-file, or asked on the terminal (never echoed)."""
    if args.code_file is not None:
        return _read(args.code_file, f"the one-time code of {whose}").strip()
    if not sys.stdin.isatty():
        raise UserInputError(f"the one-time code of {whose}: give --code-file PATH (- reads "
                             "stdin), or run on a terminal to be asked for it")
    return getpass.getpass(f"One-time code of {whose}: ").strip()


def _admin(deps: Deps, args: argparse.Namespace) -> Admin:
    """The administrator named by --admin, proven by their code (checked and spent)."""
    command = f"approvers {args.approvers_command} {args.name}"
    return approver_registry.authorise(deps, args.admin, _code(args, args.admin), _actor(),
                                       command)


def _provisioning(row: Approver, secret: str) -> None:
    print("Add this to the approver's authenticator app (it holds the secret: show it to "
          "nobody else, keep no copy):", flush=True)
    print(totp.provisioning_uri(secret, row.name), flush=True)


def _bootstrap_admin(args: argparse.Namespace) -> int:
    _check_inputs(args)
    deps = runtime.build()
    existing = approvers.get(deps.sessions, args.name)
    secret = _secret(args) if existing is None else ""
    code = "" if existing is None else _code(args, args.name)
    done = approver_registry.bootstrap_admin(deps, name=args.name, email=args.email,
                                             secret=secret, via=_actor(), code=code)
    row = done.admin
    print(f"{row.name} ({row.email}) is the first administrator: from now on changes of the "
          f"approver registry need an administrator's code (--admin {row.name}).", flush=True)
    if done.secret_enrolled:
        _provisioning(row, secret)
    return 0


def _approver_add(args: argparse.Namespace) -> int:
    _check_inputs(args)
    approvers.validate(args.name, args.email, args.role)  # before the admin's code is spent
    secret = _secret(args)
    deps = runtime.build()
    admin = _admin(deps, args)
    row = approver_registry.enroll(deps, admin, name=args.name, email=args.email,
                                   role=args.role, secret=secret)
    print(f"Enrolled {row.name} ({row.role}, {row.email}) by {admin.name}.", flush=True)
    _provisioning(row, secret)
    if row.role == approvers.DEMO_ROLE:
        print(f"Demo approver: `billing-recon approvers code {row.name}` prints its code.")
    return 0


def _approver_reset(args: argparse.Namespace) -> int:
    _check_inputs(args)
    secret = _secret(args)
    deps = runtime.build()
    _known(deps, args.name)
    row = approver_registry.reset(deps, _admin(deps, args), args.name, secret)
    print(f"{row.name} has a new secret; codes of the old one no longer count.", flush=True)
    _provisioning(row, secret)
    return 0


def _known(deps: Deps, name: str) -> None:
    """Refuse an unknown target before the administrator's code is spent on it."""
    if approvers.get(deps.sessions, name) is None:
        raise UserInputError(f"no approver named {name!r} (billing-recon approvers list)")


def _approver_switch(args: argparse.Namespace) -> int:
    _check_inputs(args)
    deps = runtime.build()
    _known(deps, args.name)
    enable = args.approvers_command == "enable"
    changed = approver_registry.set_enabled(deps, _admin(deps, args), args.name, enable)
    state = "enabled" if enable else "disabled"
    print(f"{args.name} is {state}" if changed else f"{args.name} was already {state}")
    return 0


def _approver_unlock(args: argparse.Namespace) -> int:
    _check_inputs(args)
    deps = runtime.build()
    _known(deps, args.name)
    changed = approver_registry.unlock(deps, _admin(deps, args), args.name)
    print(f"{args.name} is unlocked" if changed else f"{args.name} was not locked out")
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
