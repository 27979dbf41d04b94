"""`process` never goes silent on a ticket: a failed run is reported with its error."""

from __future__ import annotations

import json
import socket

import pytest

from billing_recon.store.sample_data import SampleSet
from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def test_failed_run_is_reported_with_its_error_and_the_ticket_it_left(
        cli: Cli, sample: SampleSet) -> None:
    cli.env.update({"BILLING_RECON_LLM": "openai", "OPENAI_API_KEY": "sk-test",
                    "OPENAI_BASE_URL": f"http://127.0.0.1:{_closed_port()}/v1"})
    email = str(sorted(sample.inbox_dir.glob("*.eml"))[0])
    done = cli.run("process", email, "--json", "--wait", "0")
    assert done.returncode == 0, done.stderr  # the email became a ticket (SPEC §8)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 1
    assert lines[0]["email"] == email
    assert lines[0]["state"] == "RECEIVED"  # its last committed state: re-processing resumes
    assert "model" in lines[0]["error"].lower() or "connect" in lines[0]["error"].lower()
