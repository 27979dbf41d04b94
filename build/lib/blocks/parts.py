"""What a block hands to the core: its share of ``Settings`` keyword arguments."""

from __future__ import annotations

from decimal import Decimal
from typing import TypedDict

from pydantic import SecretStr

from billing_recon.llm.settings import LlmBudget, ModelSettings
from billing_recon.sandbox.settings import SandboxSettings

#: Where the block types' "documentation" link points in the Prefect UI.
DOCS_URL = "https://docs.prefect.io/v3/concepts/blocks"


class SettingsPart(TypedDict, total=False):
    """Keyword arguments of ``billing_recon.config.Settings``; each block fills its own."""

    database_url: str
    llm: str
    llm_models: ModelSettings
    llm_budget: LlmBudget
    sandbox: str
    sandbox_settings: SandboxSettings
    gateway_url: str | None
    gateway_db: str
    stripe_api_key: str
    approvers: tuple[str, ...]
    signing_key_value: str | None
    approver_key_value: str | None
    approval_timeout_s: float
    require_verified_code: bool
    four_eyes_thresholds: tuple[tuple[str, Decimal], ...]


def reveal(value: SecretStr | None) -> str | None:
    """The plain value of an optional secret, for handing to the core."""
    return None if value is None else value.get_secret_value()


def conceal(value: str | None) -> SecretStr | None:
    """An optional plain value as a secret field value."""
    return None if value is None else SecretStr(value)
