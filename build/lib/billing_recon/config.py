"""Runtime settings from the environment, with the embedded defaults of the README."""

from __future__ import annotations

import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from billing_recon.errors import UserInputError
from billing_recon.llm.settings import LlmBudget, ModelSettings
from billing_recon.sandbox.settings import SandboxSettings
from billing_recon.store.db import database_url

DEFAULT_APPROVERS = ("alice", "bob")
TRUE = {"1", "true", "yes", "on"}
# Random per process: a fingerprint tells secrets apart in this process and is useless elsewhere
# (no offline guessing of a weak database password from a logged repr).
_FINGERPRINT_KEY = secrets.token_bytes(32)


def secret_fingerprint(*values: str | None) -> str:
    """A keyed digest of secret values: equal values give equal fingerprints in one process."""
    return hmac.new(_FINGERPRINT_KEY, json.dumps(values).encode(), "sha256").hexdigest()[:20]


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


def _four_eyes() -> tuple[tuple[str, Decimal], ...]:
    """BILLING_RECON_FOUR_EYES, e.g. ``USD:1000,EUR:900``: above it two approvers are needed."""
    raw = os.environ.get("BILLING_RECON_FOUR_EYES", "")
    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        currency, sep, amount = item.partition(":")
        try:
            if not sep:
                raise InvalidOperation
            pairs.append((currency.strip().upper(), Decimal(amount.strip())))
        except InvalidOperation as exc:
            raise UserInputError(f"BILLING_RECON_FOUR_EYES: {item!r} is not CURRENCY:AMOUNT"
                                 ) from exc
    return tuple(pairs)


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs to know about its environment."""

    # May hold a password: kept out of the repr, which covers it through secrets_digest.
    database_url: str = field(default_factory=database_url, repr=False)
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
        default_factory=lambda: os.environ.get("BILLING_RECON_STRIPE_API_KEY", "sk_test_local"),
        repr=False,
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
    # Issue 8: refuse any decision without a verified one-time code (production setting).
    require_verified_code: bool = field(
        default_factory=lambda: os.environ.get("BILLING_RECON_REQUIRE_CODE", "").lower() in TRUE
    )
    # Per currency: a refund above this amount needs two different approvers.
    four_eyes_thresholds: tuple[tuple[str, Decimal], ...] = field(default_factory=_four_eyes)
    # Given by a Block (ApprovalPolicy); wins over BILLING_RECON_SIGNING_KEY and the key file.
    signing_key_value: str | None = field(default=None, repr=False, kw_only=True)
    # Given by a Block (ApprovalPolicy): seals approvers' TOTP secrets; wins over env and file.
    approver_key_value: str | None = field(default=None, repr=False, kw_only=True)
    # The repr is runtime.build's cache key: two settings that differ only in a secret must not
    # share it, and no secret may appear in it.
    secrets_digest: str = field(init=False, default="")

    def __post_init__(self) -> None:
        digest = secret_fingerprint(self.database_url, self.stripe_api_key,
                                    self.sandbox_settings.e2b_api_key, self.signing_key_value,
                                    self.approver_key_value)
        object.__setattr__(self, "secrets_digest", digest)

    def signing_key(self) -> bytes:
        """Given key, else BILLING_RECON_SIGNING_KEY, else a random key in an owner-only file."""
        return _key(self.signing_key_value, "BILLING_RECON_SIGNING_KEY",
                    self.home / "signing.key")

    def approver_key(self) -> bytes:
        """Key material sealing approvers' TOTP secrets: given key, BILLING_RECON_APPROVER_KEY,
        else a random key in an owner-only file ``approvers.key`` (created once).

        Losing or changing it makes every enrolled secret unreadable: approvers re-enroll.
        """
        return _key(self.approver_key_value, "BILLING_RECON_APPROVER_KEY",
                    self.home / "approvers.key")


def _key(given: str | None, env_name: str, path: Path) -> bytes:
    """A key: the one given (by a Block), else the env variable, else the key file at
    ``path``, created once with a random key and mode 0600."""
    if given:
        return given.encode()
    env = os.environ.get(env_name)
    if env:
        return env.encode()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
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
    raise RuntimeError(f"key file {path} is empty")
