"""``billing-recon approvers ...`` in-process (the parser and commands, on both databases):
the first administrator bootstrapped once, every change authorised by an administrator's code
read from a file or stdin (never argv), audited, and no secret ever shown but at enrolment."""

from __future__ import annotations

import getpass
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from billing_recon import runtime
from billing_recon.domain import totp
from billing_recon.store import code_attempts
from billing_recon_cli.main import PREFECT_DEFAULTS, main
from tests.integration.gate_support import now_code, wrong_code

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # the administrator's app (root)
CAROL = "KRSXG5CBOBYHE33WMVZEY2LLMVKE6VCQ"
Run = Callable[..., tuple[int, str, str]]
ME = f"cli:{getpass.getuser()}"  # the audit's ``via``: who ran the command


@pytest.fixture
def run(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Iterator[Run]:
    """``run(*argv, stdin="") -> (exit code, stdout, stderr)`` against the migrated database."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    for key, value in PREFECT_DEFAULTS.items():  # main() sets these; restored afterwards
        monkeypatch.setenv(key, value)
    for name in ("BILLING_RECON_REQUIRE_CODE", "BILLING_RECON_APPROVER_KEY",
                 "BILLING_RECON_MAX_WRONG_CODES", "BILLING_RECON_WRONG_CODE_WINDOW_S"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()

    def call(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))  # not a terminal: no prompt
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        out = capsys.readouterr()
        runtime.reset()  # each call is a process of its own
        return code, out.out, out.err

    yield call
    runtime.reset()


def _with_root(run: Run) -> None:
    code, out, _ = run("approvers", "bootstrap-admin", "root", "--email", "root@ops.example",
                       "--totp-secret-file", "-", stdin=SECRET + "\n")
    assert code == 0 and f"otpauth://totp/billing-recon:root?secret={SECRET}" in out


def test_approver_admin_registry_changes_need_the_administrators_code(
        run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_RECON_REQUIRE_CODE", "1")
    add = ("approvers", "add", "carol", "--email", "carol@finance.example")
    code, _, err = run(*add)
    assert code == 2 and "the following arguments are required: --admin" in err
    code, _, err = run(*add, "--admin", "root", "--code-file", "-", stdin="123456")
    assert code == 1 and "'root' is not an administrator" in err and "bootstrap-admin" in err
    _with_root(run)
    code, _, err = run("approvers", "bootstrap-admin", "eve", "--email", "eve@x.example")
    assert code == 2 and "an administrator exists already (root)" in err
    code, _, err = run(*add, "--admin", "root", "--code-file", "-", stdin=wrong_code(SECRET))
    assert code == 1 and "'root': wrong or expired one-time code" in err
    code, _, err = run(*add, "--admin", "root")  # no code: no terminal to ask on
    assert code == 2 and "give --code-file PATH" in err
    first = now_code(SECRET)
    code, out, err = run(*add, "--admin", "root", "--code-file", "-", stdin=first + "\n")
    assert code == 0, err
    assert "Enrolled carol (approver, carol@finance.example) by root." in out
    code, _, err = run("approvers", "disable", "carol", "--admin", "root", "--code-file", "-",
                       stdin=first)
    assert code == 1 and "this one-time code was already used" in err
    assert run("approvers", "disable", "carol", "--admin", "root", "--code-file", "-",
               stdin=now_code(SECRET, 1))[:2] == (0, "carol is disabled\n")
    code, out, _ = run("approvers", "audit", "--json")
    assert [(a["approver"], a["action"], a["actor"], a["details"]) for a in json.loads(out)] == [
        ("root", "bootstrap_admin", ME, {"email": "root@ops.example", "role": "admin"}),
        ("root", "wrong_code", ME, {"channel": "admin", "command": "approvers add carol"}),
        ("carol", "add", "root", {"email": "carol@finance.example", "role": "approver",
                                  "via": ME}),
        ("carol", "disable", "root", {"via": ME})]
    assert SECRET not in out and first not in out


def test_approver_admin_secrets_come_from_a_file_or_stdin_never_from_argv(
        run: Run, tmp_path: Path) -> None:
    code, _, err = run("approvers", "bootstrap-admin", "root", "--email", "root@ops.example",
                       "--totp-secret", SECRET)
    assert code == 2 and "--totp-secret-file PATH" in err and SECRET not in err
    (tmp_path / "root.key").write_text(SECRET.lower() + "\n")
    code, out, _ = run("approvers", "bootstrap-admin", "root", "--email", "root@ops.example",
                       "--totp-secret-file", str(tmp_path / "root.key"))
    assert code == 0 and f"secret={SECRET}&" in out
    add = ("approvers", "add", "carol", "--email", "carol@finance.example", "--admin", "root")
    code, _, err = run(*add, "--totp-secret-file", "-", "--code-file", "-", stdin=CAROL)
    assert code == 2 and "only one of --totp-secret-file and --code-file" in err
    code, _, err = run(*add, "--totp-secret-file", str(tmp_path / "missing"))
    assert code == 2 and "cannot read the TOTP secret from" in err
    code, _, err = run(*add, "--code", now_code(SECRET))  # no abbreviation of --code-file
    assert code == 2 and "unrecognized arguments: --code" in err
    (tmp_path / "code").write_text(now_code(SECRET))
    code, out, _ = run(*add, "--totp-secret-file", "-", "--code-file", str(tmp_path / "code"),
                       stdin=CAROL)
    assert code == 0 and f"secret={CAROL}&" in out
    code, out, _ = run("approvers", "reset", "carol", "--admin", "root", "--code-file", "-",
                       stdin=now_code(SECRET, 1))
    assert code == 0 and "otpauth://" in out and CAROL not in out  # a new random secret
    code, out, _ = run("approvers", "list", "--json")
    assert SECRET not in out and CAROL not in out
    assert [a["action"] for a in json.loads(run("approvers", "audit", "--json")[1])] == [
        "bootstrap_admin", "add", "reset"]


def test_code_rate_a_locked_out_administrator_is_unlocked_by_another(
        run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BILLING_RECON_MAX_WRONG_CODES", "2")
    _with_root(run)
    (tmp_path / "code").write_text(now_code(SECRET))
    code, _, _ = run("approvers", "add", "ops", "--email", "ops@ops.example", "--role", "admin",
                     "--totp-secret-file", "-", "--admin", "root", "--code-file",
                     str(tmp_path / "code"), stdin=CAROL)
    assert code == 0
    guess = ("approvers", "disable", "root", "--admin", "ops", "--code-file", "-")
    assert "wrong or expired" in run(*guess, stdin=wrong_code(CAROL))[2]
    code, _, err = run(*guess, stdin=wrong_code(CAROL))
    assert code == 1 and "'ops' is now locked out" in err and "approvers unlock ops" in err
    code, _, err = run(*guess, stdin=now_code(CAROL))
    assert code == 1 and "'ops' is locked out after too many wrong one-time codes" in err
    code, out, _ = run("approvers", "list", "--json")
    assert [a["name"] for a in json.loads(out) if a["locked_at"]] == ["ops"]
    assert run("approvers", "unlock", "ops", "--admin", "root", "--code-file", "-",
               stdin=now_code(SECRET, 1))[:2] == (0, "ops is unlocked\n")
    code, out, _ = run("approvers", "audit", "ops", "--json")
    assert [(a["action"], a["actor"]) for a in json.loads(out)] == [
        ("add", "root"), ("wrong_code", ME), ("wrong_code", ME), ("lockout", ME),
        ("unlock", "root")]
    assert json.loads(out)[3]["details"] == {"wrong_codes": 2, "window_s": 900.0}
    assert run(*guess, stdin=now_code(CAROL))[0] == 0  # ops disables root: it counts again


def test_approver_admin_a_demo_approvers_code_is_printable_and_verifies(
        run: Run, tmp_path: Path) -> None:
    _with_root(run)
    (tmp_path / "dora.key").write_text(CAROL)
    assert run("approvers", "add", "dora", "--email", "dora@x.example", "--role", "demo",
               "--totp-secret-file", str(tmp_path / "dora.key"), "--admin", "root",
               "--code-file", "-", stdin=now_code(SECRET))[0] == 0
    code, out, _ = run("approvers", "code", "dora")
    step = totp.matching_step(CAROL, out.strip(), time.time())
    assert code == 0 and step is not None
    with runtime.build().sessions() as s, s.begin():  # dora decided with it
        code_attempts.spend_code(s, "dora", step)
    code, out, _ = run("approvers", "code", "dora")  # the next one, valid already
    assert code == 0 and totp.matching_step(CAROL, out.strip(), time.time()) == step + 1
    code, _, err = run("approvers", "code", "root")
    assert code == 2 and "not a demo approver" in err
