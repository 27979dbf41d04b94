"""A Prefect server with basic auth: only a client holding the credential resumes a paused run.

Its own server (PREFECT_SERVER_API_AUTH_STRING set), started once for the module on loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing_recon.store.sample_data import generate
from tests.e2e.conftest import Cli
from tests.e2e.paused import Background, BillingDb, final_state, paused_run, run_state
from tests.prefect_server import running_server

pytestmark = pytest.mark.e2e

USER, PASSWORD = "ops", "correct-horse-battery"
CREDENTIAL = f"{USER}:{PASSWORD}"
EMAIL = "05-tax-error.eml"

# A bare Prefect client resuming a run, as any script holding the API URL could.
RESUME = """
import json, sys
from uuid import UUID
from prefect.flow_runs import resume_flow_run
resume_flow_run(UUID(sys.argv[1]), run_input=json.loads(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def protected_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second real Prefect server (about 10 s to start), its API behind basic auth."""
    home = tmp_path_factory.mktemp("prefect-auth-server")
    with running_server(home, {"PREFECT_SERVER_API_AUTH_STRING": CREDENTIAL}) as url:
        yield url


@pytest.fixture
def operator(tmp_path: Path, protected_api: str) -> Iterator[tuple[Cli, BillingDb]]:
    """The CLI with the server's credential (PREFECT_API_AUTH_STRING) and sample data."""
    cli = Cli(tmp_path, protected_api)
    cli.env.update({"PREFECT_API_AUTH_STRING": CREDENTIAL,
                    "BILLING_RECON_DATABASE_URL": f"sqlite:///{tmp_path / 'billing.db'}"})
    data = generate(tmp_path / "sample", seed=7)
    loaded = cli.run("load", str(data.data_dir))
    assert loaded.returncode == 0, loaded.stderr
    billing = BillingDb(cli.env["BILLING_RECON_DATABASE_URL"])
    yield cli, billing
    billing.close()
    shutil.rmtree(tmp_path / "prefect", ignore_errors=True)


def resume(cli: Cli, run_id: str, form: dict[str, Any],
           credential: str | None) -> subprocess.CompletedProcess[str]:
    """Run RESUME in a fresh process with ``credential`` as its only Prefect credential."""
    env = {k: v for k, v in cli.env.items() if k != "PREFECT_API_AUTH_STRING"}
    if credential is not None:
        env["PREFECT_API_AUTH_STRING"] = credential
    return subprocess.run([sys.executable, "-c", RESUME, run_id, json.dumps(form)], env=env,
                          cwd=cli.cwd, text=True, capture_output=True, timeout=120, check=False)


def test_only_a_client_with_the_credential_can_resume_a_paused_run(
        operator: tuple[Cli, BillingDb], protected_api: str) -> None:
    cli, billing = operator
    auth = (USER, PASSWORD)
    waiting = Background(cli, [str(cli.cwd / "sample" / "inbox" / EMAIL)])
    try:
        ticket = waiting.first(str(cli.cwd / "sample" / "inbox" / EMAIL))["ticket_id"]
        run_id = paused_run(billing, protected_api, ticket, auth=auth)
        form = {"approve": True, "approver": "alice", "note": "",
                "proposal_hash": billing.ticket(ticket).proposal_hash}
        unauthorized = httpx.post(f"{protected_api}/flow_runs/{run_id}/resume",
                                  json={"run_input": form}, timeout=10)
        assert unauthorized.status_code == 401
        for credential in (None, f"{USER}:wrong-password"):
            refused = resume(cli, run_id, form, credential)
            assert refused.returncode != 0 and "401 Unauthorized" in refused.stderr
        assert run_state(protected_api, run_id, auth) == "PAUSED"
        _cli_without_credential_records_nothing(cli, ticket)
        assert billing.ticket(ticket).state == "APPROVAL_PENDING"
        assert waiting.of(ticket) == [("APPROVAL_PENDING", None)]
        accepted = resume(cli, run_id, form, CREDENTIAL)
        assert accepted.returncode == 0, accepted.stderr
        assert waiting.settled(ticket)["state"] == "CLOSED"
        assert waiting.of(ticket)[-1] == ("CLOSED", "refunded")
    finally:
        waiting.stop(grace_s=30)
    assert final_state(protected_api, run_id, auth) == "COMPLETED"
    assert len([r for r in cli.json("refunds") if r["ticket_id"] == ticket]) == 1


def _cli_without_credential_records_nothing(cli: Cli, ticket: str) -> None:
    """`approve` without the credential: a clear error before any decision is recorded."""
    saved = cli.env.pop("PREFECT_API_AUTH_STRING")
    try:
        done = cli.run("approve", ticket, "--by", "alice")
    finally:
        cli.env["PREFECT_API_AUTH_STRING"] = saved
    assert done.returncode == 2
    assert "refused this client (401)" in done.stderr and "Traceback" not in done.stderr
    assert "no decision was recorded" in done.stderr
