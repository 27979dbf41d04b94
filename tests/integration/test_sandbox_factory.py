"""Choosing the sandbox: settings from the environment, the start-up probe, the loud fallback."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest
from pydantic import SecretStr

from billing_recon import runtime
from billing_recon.config import Settings, from_variables
from billing_recon.config.sandbox import SandboxSettings
from billing_recon.errors import SandboxUnavailable, UserInputError
from billing_recon.sandbox.bwrap import Jail, probe
from billing_recon.sandbox.factory import make_sandbox
from billing_recon.sandbox.local import WarmPool
from billing_recon.sandbox.port import SandboxLimits
from billing_recon.sandbox.subprocess_sandbox import SubprocessSandbox
from tests.integration.sandbox_support import NO_USERNS, processes_with_arg


def test_default_backend_is_the_warm_bubblewrap_pool() -> None:
    box = make_sandbox(SandboxSettings(backend="local", workers=3))
    try:
        assert isinstance(box, WarmPool) and box.size == 3
        assert box.run("pass", {}).isolation == "bwrap"
    finally:
        box.close()


def test_probe_reports_why_bubblewrap_cannot_run(blocked_bwrap: str) -> None:
    assert probe(Jail.for_this_python()) is None
    assert NO_USERNS in (probe(Jail.for_this_python(bwrap=blocked_bwrap)) or "")
    assert "cannot run" in (probe(Jail.for_this_python(bwrap="/nonexistent/bwrap")) or "")


def test_blocked_namespaces_fall_back_loudly_and_results_say_so(
    blocked_bwrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="billing_recon.sandbox.factory"):
        box = make_sandbox(SandboxSettings(backend="local", bwrap=blocked_bwrap))

    assert isinstance(box, SubprocessSandbox)
    assert "SANDBOX ISOLATION DOWNGRADED" in caplog.text and NO_USERNS in caplog.text
    assert box.run("pass", {}).isolation == "rlimit-subprocess"


@pytest.mark.parametrize("backend", ["local", "bwrap"])
def test_required_isolation_refuses_to_fall_back(backend: str, blocked_bwrap: str) -> None:
    settings = SandboxSettings(backend=backend, bwrap=blocked_bwrap,
                               require_isolation=backend == "local")

    with pytest.raises(SandboxUnavailable, match="bubblewrap isolation is unavailable"):
        make_sandbox(settings)


def test_weak_backend_is_refused_when_isolation_is_required() -> None:
    with pytest.raises(SandboxUnavailable, match="strong isolation is required"):
        make_sandbox(SandboxSettings(backend="subprocess", require_isolation=True))


def test_settings_come_from_the_environment() -> None:
    env = {
        "BILLING_RECON_SANDBOX_REQUIRE_ISOLATION": "true", "BILLING_RECON_SANDBOX_WORKERS": "4",
        "BILLING_RECON_SANDBOX_JOBS_PER_WORKER": "100", "BILLING_RECON_SANDBOX_UID": "60001",
        "BILLING_RECON_SANDBOX_BWRAP": "/opt/bwrap", "BILLING_RECON_SANDBOX_CPU_SECONDS": "5",
        "BILLING_RECON_SANDBOX_WALL_TIMEOUT_S": "2.5", "E2B_API_KEY": "e2b_k",
        "BILLING_RECON_SANDBOX_E2B_TEMPLATE": "tmpl", "BILLING_RECON_SANDBOX_E2B_TIMEOUT_S": "60",
    }

    settings = from_variables(env).sandbox

    assert settings == SandboxSettings(
        limits=SandboxLimits(cpu_seconds=5, wall_timeout_s=2.5), require_isolation=True,
        workers=4, jobs_per_worker=100, uid=60001, bwrap="/opt/bwrap",
        e2b_api_key=SecretStr("e2b_k"), e2b_template="tmpl", e2b_timeout_s=60)
    assert "e2b_k" not in repr(settings)
    assert from_variables({}).sandbox == SandboxSettings()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("BILLING_RECON_SANDBOX_WORKERS", "0", "greater than or equal to 1"),
     ("BILLING_RECON_SANDBOX_WORKERS", "two", "valid integer"),
     ("BILLING_RECON_SANDBOX_REQUIRE_ISOLATION", "maybe", "valid boolean"),
     ("BILLING_RECON_SANDBOX_MEMORY_BYTES", "1000", "below 1 GiB")],
)
def test_bad_settings_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(UserInputError, match=f"{name}='{value}': .*{message}"):
        from_variables({name: value})


def test_runtime_builds_the_configured_pool_and_reset_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_RECON_SANDBOX_WORKERS", "1")
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", f"sqlite:///{tmp_path}/billing.db")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the pool's dir, to find its jails
    runtime.reset()
    deps = runtime.build(Settings())
    assert isinstance(deps.sandbox, WarmPool) and deps.sandbox.size == 1

    assert deps.sandbox.run("print('via runtime')", {}).stdout == "via runtime\n"
    assert processes_with_arg(str(tmp_path)) != []
    runtime.reset()

    assert processes_with_arg(str(tmp_path)) == []
