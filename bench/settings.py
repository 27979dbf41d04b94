"""The Prefect configurations the benchmarks compare: library defaults and our tuned settings.

Every tuned value is an ordinary Prefect setting (no code change) and is explained in
docs/benchmarks.md; each was measured against the default side by side.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import certifi

SERVICES = "PREFECT_SERVER_SERVICES_"

#: Server: record task runs and persist events in batches instead of one row per message.
#: With the defaults (task-run recorder batch size 1) the server spends ~60% of its CPU
#: inserting task runs one at a time.
TUNED_SERVER: dict[str, str] = {
    SERVICES + "TASK_RUN_RECORDER_BATCH_SIZE": "100",
    SERVICES + "TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    SERVICES + "EVENT_PERSISTER_BATCH_SIZE": "200",
    SERVICES + "EVENT_PERSISTER_FLUSH_INTERVAL": "1",
}

#: The result-storage block the tuned clients name, so no flow run asks the server for it.
RESULTS_BLOCK = "local-file-system/billing-recon-results"


def single_ca_file() -> str:
    """A PEM file holding one CA certificate (the first of certifi's bundle).

    Prefect builds a new SSL context for every API client it creates (two per flow run),
    loading all of certifi's ~150 certificates each time, even for an http:// API. Naming
    one CA file instead (PREFECT_API_SSL_CERT_FILE: in production, the CA that signed your
    server's certificate) removes that cost.
    """
    bundle = Path(certifi.where()).read_text(encoding="ascii")
    end = "-----END CERTIFICATE-----"
    first = bundle[bundle.index("-----BEGIN CERTIFICATE-----"):bundle.index(end) + len(end)]
    path = Path(tempfile.mkdtemp(prefix="bench-ca-")) / "ca.pem"
    path.write_text(first + "\n", encoding="ascii")
    return str(path)


def tuned_client(ca_file: str) -> dict[str, str]:
    """Client settings of the tuned configuration."""
    return {"PREFECT_API_SSL_CERT_FILE": ca_file,
            "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": RESULTS_BLOCK}


def save_results_block(basepath: str) -> str:
    """Python source that saves the results block on the current server (run in a client)."""
    return ("from prefect.filesystems import LocalFileSystem\n"
            f"LocalFileSystem(basepath={basepath!r}).save("
            f"{RESULTS_BLOCK.split('/', 1)[1]!r}, overwrite=True)\n")
