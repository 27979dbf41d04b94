"""``billing-recon eval``: the report as JSON, gates as exit codes, and no gateway request.

The gateway the configuration names is a loopback listener that counts every connection: the
evaluation must make none (and the same listener does count the refund client's request).
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from billing_recon.errors import GatewayError
from billing_recon.evaluation.corpus import generate_corpus
from billing_recon.payments.refunds import RefundClient, RefundRequest
from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e
KEY = "sk_test_counted"


class ConnectionCounter:
    """A TCP listener on 127.0.0.1 that counts connections and answers each with a 500."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The listener as a base URL."""
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                except OSError:
                    pass

    def stop(self) -> None:
        """Stop accepting and close the port."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def gateway() -> Iterator[ConnectionCounter]:
    counter = ConnectionCounter()
    yield counter
    counter.stop()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("corpus"), seed=5, size=17)


def test_eval_reports_every_configuration_and_calls_no_gateway(
        ephemeral_cli: Cli, gateway: ConnectionCounter, corpus: Path) -> None:
    ephemeral_cli.env.update({"BILLING_RECON_GATEWAY_URL": gateway.url,
                              "BILLING_RECON_STRIPE_API_KEY": KEY,
                              "BILLING_RECON_WEBHOOK_URL": gateway.url})
    done = ephemeral_cli.run("eval", str(corpus), "--json", "--config", "rules=offline",
                             "--config", "strict=BILLING_RECON_LLM=offline,"
                             "BILLING_RECON_LLM_ANALYSIS_RETRIES=0",
                             "--records", "records.jsonl")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["corpus"]["emails"] == 17
    assert set(report["configurations"]) == {"rules", "strict"}
    for scores in report["configurations"].values():
        assert scores["tickets"] == 17
        assert {"triage", "outcomes", "refunds", "money", "escalations", "cost", "steps",
                "by_variety"} <= set(scores)
    records = (ephemeral_cli.cwd / "records.jsonl").read_text().splitlines()
    assert len(records) == 34
    assert gateway.connections == 0
    # The listener is no dead end: the refund client's call does reach it.
    client = RefundClient(KEY, gateway.url, max_network_retries=0, timeout_s=5)
    with pytest.raises(GatewayError):
        client.refund(RefundRequest("ch_1", Decimal("1.00"), "USD", "eval:probe"))
    client.close()
    assert gateway.connections == 1


def test_gates_exit_1_and_bad_metrics_exit_2(ephemeral_cli: Cli, corpus: Path) -> None:
    failed = ephemeral_cli.run("eval", str(corpus), "--json", "--fail-under",
                               "outcome_accuracy=1.01", "--fail-over", "escalation_rate=0.5")
    assert failed.returncode == 1, failed.stderr
    assert "gate failed: offline: outcome_accuracy = " in failed.stderr
    assert "escalation_rate" not in failed.stderr
    assert json.loads(failed.stdout)["configurations"]["offline"]["tickets"] == 17
    unknown = ephemeral_cli.run("eval", str(corpus), "--fail-under", "recal=0.9")
    assert unknown.returncode == 2
    assert "unknown metric recal" in unknown.stderr and "refund_recall" in unknown.stderr
    missing = ephemeral_cli.run("eval", str(ephemeral_cli.cwd))
    assert missing.returncode == 2 and "is not a labelled folder" in missing.stderr


def test_a_label_without_its_email_is_exit_2(ephemeral_cli: Cli, corpus: Path,
                                             tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(corpus, broken)
    (broken / "inbox" / sorted(p.name for p in (broken / "inbox").iterdir())[0]).unlink()
    done = ephemeral_cli.run("eval", str(broken))
    assert done.returncode == 2 and "labelled emails missing from" in done.stderr
