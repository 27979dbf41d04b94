"""Runtime settings from the environment, with the embedded defaults of the README."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from billing_recon.llm.settings import LlmBudget, ModelSettings
from billing_recon.sandbox.settings import SandboxSettings
from billing_recon.store.db import database_url

DEFAULT_APPROVERS = ("alice", "bob")


def _home() -> Path:
    return Path(os.environ.get("BILLING_RECON_HOME", str(Path.home() / ".billing-recon")))


def _llm() -> str:
    """BILLING_RECON_LLM; unset, the OpenAI adapter when OPENAI_BASE_URL names a server.

    OPENAI_API_KEY alone does not switch: a key in someone's shell must not start spending.
    """
    explicit = os.environ.get("BILLING_RECON_LLM", "").strip()
    if explicit:
        return explicit
    return "openai" if os.environ.get("OPENAI_BASE_URL", "").strip() else "offline"


def _approvers() -> tuple[str, ...]:
    raw = os.environ.get("BILLING_RECON_APPROVERS")
    if raw is None:
        return DEFAULT_APPROVERS
    return tuple(name.strip() for name in raw.split(",") if name.strip())


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs to know about its environment."""

    database_url: str = field(default_factory=database_url)
    home: Path = field(default_factory=_home)
    approvers: tuple[str, ...] = field(default_factory=_approvers)
    gateway_url: str | None = field(
        default_factory=lambda: os.environ.get("BILLING_RECON_GATEWAY_URL") or None
    )
    gateway_db: str = field(
        default_factory=lambda: os.environ.get(
            "BILLING_RECON_GATEWAY_DB", "sqlite:///billing_recon_gateway.db"
        )
    )
    stripe_api_key: str = field(
        default_factory=lambda: os.environ.get("BILLING_RECON_STRIPE_API_KEY", "sk_test_local")
    )
    sandbox: str = field(default_factory=lambda: os.environ.get("BILLING_RECON_SANDBOX", "local"))
    sandbox_settings: SandboxSettings = field(default_factory=SandboxSettings.from_env)
    llm: str = field(default_factory=_llm)
    llm_models: ModelSettings = field(default_factory=ModelSettings.from_env)
    llm_budget: LlmBudget = field(default_factory=LlmBudget.from_env)
    approval_timeout_s: float = field(
        default_factory=lambda: float(os.environ.get("BILLING_RECON_APPROVAL_TIMEOUT", "259200"))
    )
    analysis_retries: int = 3

    def signing_key(self) -> bytes:
        """BILLING_RECON_SIGNING_KEY, else a random key kept in an owner-only file."""
        env = os.environ.get("BILLING_RECON_SIGNING_KEY")
        if env:
            return env.encode()
        path = self.home / "signing.key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first; use theirs
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
        for _ in range(50):  # the creator may not have written it yet
            key = path.read_text().strip()
            if key:
                return key.encode()
            time.sleep(0.05)
        raise RuntimeError(f"signing key file {path} is empty")
