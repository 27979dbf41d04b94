"""`python flows/<name>.py` runs the flow the Prefect way (issue 15, item 1): from a terminal,
on the settings of the environment, printing each ticket's state; `--serve` serves
reconcile-inbox with the scheduled batch's schedule from deployments/prefect.yaml."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from billing_recon.store.sample_data import SampleSet
from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def _script(cli: Cli, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "flows" / f"{name}.py"), *args],
                          cwd=cli.cwd, env=cli.env, text=True, capture_output=True,
                          timeout=300, check=False)


def test_process_ticket_runs_from_its_file_and_prints_the_state(cli: Cli,
                                                                sample: SampleSet) -> None:
    mail = sorted(sample.inbox_dir.glob("*.eml"))[0]
    done = _script(cli, "process_ticket", str(mail))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("T-000001   APPROVAL_PENDING")
    assert "billing-recon approve T-000001" in done.stdout
    assert cli.json("tickets", "show", "T-000001")["state"] == "APPROVAL_PENDING"
    again = _script(cli, "process_ticket", "--ticket", "T-000001")  # resume: same ticket
    assert again.returncode == 0 and "T-000001   APPROVAL_PENDING" in again.stdout


def test_reconcile_inbox_runs_a_folder_and_refuses_bad_input(cli: Cli, sample: SampleSet) -> None:
    done = _script(cli, "reconcile_inbox", str(sample.inbox_dir))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("T-")]
    assert len(lines) == len(list(sample.inbox_dir.glob("*.eml")))
    assert any(" CLOSED " in line for line in lines) and any(" REJECTED " in line for line in lines)
    missing = _script(cli, "reconcile_inbox", str(cli.cwd / "nowhere"))
    assert (missing.returncode, missing.stderr.strip()) == (
        2, f"error: no such folder: {cli.cwd / 'nowhere'}")
    nothing = _script(cli, "process_ticket")
    assert (nothing.returncode, nothing.stderr.strip()) == (
        2, "error: give at least one EMAIL or --ticket")


def test_serve_registers_the_batch_schedule_of_the_deployments_file(
        cli: Cli, sample: SampleSet, prefect_api: str) -> None:
    serving = subprocess.Popen([sys.executable, str(REPO / "flows" / "reconcile_inbox.py"),
                                str(sample.inbox_dir), "--serve"], cwd=cli.cwd, env=cli.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deployment = _wait_for_deployment(prefect_api, "reconcile-inbox/local-batch", serving)
    finally:
        serving.terminate()
        serving.wait(timeout=60)
    [schedule] = deployment["schedules"]
    assert schedule["schedule"]["cron"] == "*/15 7-18 * * 1-5"
    assert schedule["schedule"]["timezone"] == "Europe/Berlin"
    assert deployment["parameters"]["inbox"] == str(sample.inbox_dir.resolve())


def _wait_for_deployment(api: str, name: str, proc: subprocess.Popen[str]) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        found = httpx.get(f"{api}/deployments/name/{name}", timeout=10)
        if found.status_code == 200:
            return dict(found.json())
        time.sleep(1)
    raise AssertionError(f"{name} was never served")
