"""Run the real ``billing-recon`` command in subprocesses sharing one working directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billing_recon.store.sample_data import SampleSet, generate

CLI = [sys.executable, "-m", "billing_recon_cli"]


class Cli:
    """The command line in a private working directory, Prefect home and signing key."""

    def __init__(self, cwd: Path, api_url: str | None = None) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("BILLING_RECON_", "PREFECT_"))}
        self.env.update({"BILLING_RECON_HOME": str(cwd / "home"), "PREFECT_HOME":
                         str(cwd / "prefect"), "BILLING_RECON_PAUSE_POLL_S": "1",
                         # per command, as in CI: a managed server would outlive the test
                         # (tests/e2e/test_local_server.py starts and stops its own)
                         "BILLING_RECON_PREFECT_SERVER": "temporary",
                         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
        if api_url:
            self.env["PREFECT_API_URL"] = api_url

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run to completion and capture output."""
        return subprocess.run([*CLI, *args], cwd=self.cwd, env=self.env, text=True,
                              capture_output=True, timeout=timeout, check=False)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start in the background with stdout as a pipe."""
        return subprocess.Popen([*CLI, *args], cwd=self.cwd, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def json(self, *args: str) -> Any:
        """Run a ``--json`` command and parse its output."""
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def cli(tmp_path: Path, prefect_api: str) -> Iterator[Cli]:
    """A CLI in an empty working directory, talking to the shared Prefect server."""
    yield Cli(tmp_path, prefect_api)
    shutil.rmtree(tmp_path / "prefect", ignore_errors=True)


@pytest.fixture
def ephemeral_cli(tmp_path: Path) -> Iterator[Cli]:
    """A CLI with no Prefect server configured: each command starts an ephemeral one."""
    yield Cli(tmp_path)
    shutil.rmtree(tmp_path / "prefect", ignore_errors=True)


@pytest.fixture
def sample(cli: Cli) -> SampleSet:
    """The sample data set, loaded with ``billing-recon load``."""
    data = generate(cli.cwd / "sample", seed=7)
    done = cli.run("load", str(data.data_dir))
    assert done.returncode == 0, done.stderr
    return data
