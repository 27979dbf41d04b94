"""Model-written code never runs unconfined by default (issue 14, item 1): a real model's
scripts need the bubblewrap pool or E2B, else the command refuses at start; the opt-in for
development is loud; the offline model's reference script may still use the weak fallback."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from billing_recon import runtime
from billing_recon.config import Settings
from billing_recon.config.sandbox import SandboxSettings
from billing_recon.errors import UserInputError
from billing_recon.sandbox.factory import make_sandbox
from billing_recon.sandbox.local import WarmPool
from billing_recon.sandbox.subprocess_sandbox import SubprocessSandbox

REFUSED = "scripts written by the gpt-4.1 model must run in strong isolation"


@pytest.mark.parametrize("backend", ["local", "bwrap", "subprocess"])
def test_isolation_model_code_is_refused_without_bubblewrap(backend: str,
                                                           blocked_bwrap: str) -> None:
    settings = SandboxSettings(backend=backend, bwrap=blocked_bwrap)
    with pytest.raises(UserInputError, match=REFUSED) as refused:
        make_sandbox(settings, untrusted_by="gpt-4.1")
    assert "BILLING_RECON_SANDBOX_ALLOW_WEAK_ISOLATION" in str(refused.value)


def test_isolation_the_offline_reference_script_may_still_fall_back(
        blocked_bwrap: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="billing_recon.sandbox.factory"):
        box = make_sandbox(SandboxSettings(backend="local", bwrap=blocked_bwrap))
    assert isinstance(box, SubprocessSandbox) and "DOWNGRADED" in caplog.text


def test_isolation_opt_in_runs_model_code_unconfined_and_says_so(
        blocked_bwrap: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = SandboxSettings(backend="local", bwrap=blocked_bwrap, allow_weak_isolation=True)
    with caplog.at_level(logging.WARNING, logger="billing_recon.sandbox.factory"):
        box = make_sandbox(settings, untrusted_by="gpt-4.1")
    assert isinstance(box, SubprocessSandbox)
    assert "UNCONFINED MODEL CODE" in caplog.text and "gpt-4.1" in caplog.text


def test_isolation_model_code_gets_the_bubblewrap_pool_where_it_works() -> None:
    box = make_sandbox(SandboxSettings(backend="local", workers=1), untrusted_by="gpt-4.1")
    try:
        assert isinstance(box, WarmPool) and box.run("pass", {}).isolation == "bwrap"
    finally:
        box.close()


def test_isolation_the_runtime_asks_for_it_with_any_model_but_offline(
        tmp_path: Path, blocked_bwrap: str) -> None:
    def build(**llm: str) -> None:
        runtime.reset()
        runtime.build(Settings(database={"url": f"sqlite:///{tmp_path}/b.db"},
                               home=tmp_path / "home", llm=llm,
                               sandbox={"backend": "local", "bwrap": blocked_bwrap}))
    try:
        build(backend="offline")  # the reference script: the weak fallback is allowed
        with pytest.raises(UserInputError, match=REFUSED):
            build(backend="openai", base_url="http://127.0.0.1:9/v1")
    finally:
        runtime.reset()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("server", ["temporary", "managed"])
def test_isolation_the_command_refuses_at_start_and_opens_no_ticket(
        tmp_path: Path, blocked_bwrap: str, server: str) -> None:
    """Also with the managed local server, whose runner is what builds the sandbox first."""
    mail = tmp_path / "m.eml"
    mail.write_bytes(b"From: ann@example.com\r\nSubject: bill\r\n\r\nINV-000001 is wrong\r\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_RECON_", "OPENAI"))}
    env.update({"BILLING_RECON_HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path),
                "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                "BILLING_RECON_SANDBOX_BWRAP": blocked_bwrap,
                "BILLING_RECON_PREFECT_SERVER": server,
                "BILLING_RECON_PREFECT_PORT": str(_free_port())})  # never 4200
    cli = [sys.executable, "-m", "billing_recon_cli"]
    try:
        done = subprocess.run([*cli, "process", str(mail), "--wait", "0"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=180)
    finally:  # nothing outlives the test
        subprocess.run([*cli, "server", "stop"], cwd=tmp_path, env=env, capture_output=True,
                       timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count(REFUSED) == 1 and "Traceback" not in done.stderr
    env.pop("OPENAI_BASE_URL")
    listed = subprocess.run([*cli, "approvals", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert (listed.returncode, listed.stdout.strip()) == (0, "[]")
    shown = subprocess.run([*cli, "tickets", "show", "T-000001"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 2 and "no such ticket" in shown.stderr
