"""The Prefect configurations the benchmarks compare: library defaults and what we ship.

What ships, and so what "as shipped" means here:
- server: deployments/server.env, read from that file (never a copy of its values);
- client: billing_recon_tasks.client_settings.local_client_settings(), applied in-process by
  the runner around the whole run, as our entry points do (bench/ticket_runner.py,
  BENCH_CLIENT=shipped).
"Library defaults" is a server and client with none of that.

``--proposals`` also measures client settings we do not ship (a named result-storage block,
heartbeats off); docs/benchmarks.md says why they are not shipped.
"""

from __future__ import annotations

from pathlib import Path

SERVER_ENV = Path(__file__).resolve().parents[1] / "deployments" / "server.env"

#: The result-storage block the results-block proposal names (not shipped).
RESULTS_BLOCK = "local-file-system/billing-recon-results"


def read_env_file(path: Path = SERVER_ENV) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped), as ``. file`` reads
    them (the file promises no quotes and no expansions)."""
    settings: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{path}:{number}: not a KEY=VALUE line: {line!r}")
        settings[key] = value
    return settings


def shipped_server() -> dict[str, str]:
    """Server settings as shipped: the contents of deployments/server.env."""
    return read_env_file()


def save_results_block(basepath: str) -> str:
    """Python source that saves the results block on the current server (run in a client)."""
    return ("from prefect.filesystems import LocalFileSystem\n"
            f"LocalFileSystem(basepath={basepath!r}).save("
            f"{RESULTS_BLOCK.split('/', 1)[1]!r}, overwrite=True)\n")
