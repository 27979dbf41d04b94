"""``billing-recon approvers ...`` in-process (the parser and commands, on both databases):
enrolling, listing, disabling and the audit never show a secret; codes only for demo roles."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from billing_recon import runtime
from billing_recon.domain import totp
from billing_recon.store import code_attempts
from billing_recon_cli.main import PREFECT_DEFAULTS, main

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Iterator[Run]:
    """``run(*argv) -> (exit code, stdout, stderr)`` against the migrated database."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    for key, value in PREFECT_DEFAULTS.items():  # main() sets these; restored afterwards
        monkeypatch.setenv(key, value)
    for name in ("BILLING_RECON_REQUIRE_CODE", "BILLING_RECON_APPROVER_KEY"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()

    def call(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    yield call
    runtime.reset()


def test_approver_commands_enroll_list_disable_and_audit_without_showing_secrets(
        run: Run) -> None:
    code, out, _ = run("approvers", "add", "carol", "--email", "carol@finance.example",
                        "--totp-secret", SECRET.lower())
    assert code == 0 and f"otpauth://totp/billing-recon:carol?secret={SECRET}" in out
    code, _, err = run("approvers", "add", "carol", "--email", "c@finance.example")
    assert code == 2 and "already registered" in err
    assert run("approvers", "disable", "carol")[:2] == (0, "carol is disabled\n")
    code, out, _ = run("approvers", "list", "--json")
    assert code == 0 and SECRET not in out
    assert [(a["name"], a["email"], a["enabled"]) for a in json.loads(out)] == [
        ("carol", "carol@finance.example", False)]
    code, out, _ = run("approvers", "audit", "--json")
    assert [a["action"] for a in json.loads(out)] == ["add", "disable"] and SECRET not in out
    code, _, err = run("approvers", "code", "carol")
    assert code == 2 and "not a demo approver" in err


def test_a_demo_approvers_code_is_printable_and_verifies(run: Run) -> None:
    assert run("approvers", "add", "dora", "--email", "dora@x.example", "--role", "demo",
                "--totp-secret", SECRET)[0] == 0
    code, out, _ = run("approvers", "code", "dora")
    step = totp.matching_step(SECRET, out.strip(), time.time())
    assert code == 0 and step is not None
    with runtime.build().sessions() as s, s.begin():  # dora decided with it
        code_attempts.spend_code(s, "dora", step)
    code, out, _ = run("approvers", "code", "dora")  # the next one, valid already
    assert code == 0 and totp.matching_step(SECRET, out.strip(), time.time()) == step + 1
