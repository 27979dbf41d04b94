"""The approval policy block: who may approve refunds, with which key, for how long."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Self

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from billing_recon.config import DEFAULT_APPROVERS, Settings
from blocks.parts import DOCS_URL, SettingsPart

_DEFAULT_TIMEOUT_S = 259_200.0  # 72 h, as BILLING_RECON_APPROVAL_TIMEOUT's default


class ApprovalPolicy(Block):
    """Who may approve a refund, the key that signs approvals, and how long a proposal waits.

    Example:
        ```python
        from blocks.approval import ApprovalPolicy

        policy = ApprovalPolicy.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Billing Recon Approval Policy"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    approvers: list[str] = Field(default_factory=lambda: list(DEFAULT_APPROVERS),
                                 description="Names allowed to approve or reject a refund.")
    signing_key: SecretStr = Field(
        description="HMAC key that signs approval tokens; every worker must share it.")
    approver_key: SecretStr | None = Field(
        default=None, description="Key that seals approvers' one-time-code secrets in the "
        "database; every worker and CLI must share it (unset: BILLING_RECON_APPROVER_KEY or "
        "the key file in BILLING_RECON_HOME).")
    approval_timeout_s: float = Field(
        default=_DEFAULT_TIMEOUT_S, gt=0,
        description="Seconds a proposal waits for a decision before it is escalated.")
    require_verified_code: bool = Field(
        default=False, description="Refuse any decision without a verified one-time code.")
    four_eyes_thresholds: dict[str, Annotated[Decimal, Field(ge=0)]] = Field(
        default_factory=dict, description="Per currency (e.g. USD), the refund amount above "
        "which two different approvers are needed.")

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The block that reproduces ``settings``' policy, including its signing key."""
        return cls(approvers=list(settings.approvers),
                   signing_key=SecretStr(settings.signing_key().decode()),
                   approver_key=SecretStr(settings.approver_key().decode()),
                   approval_timeout_s=settings.approval_timeout_s,
                   require_verified_code=settings.require_verified_code,
                   four_eyes_thresholds=dict(settings.four_eyes_thresholds))

    def settings_part(self) -> SettingsPart:
        """This block's share of the core ``Settings``."""
        thresholds = tuple(sorted((currency.strip().upper(), amount)
                                  for currency, amount in self.four_eyes_thresholds.items()))
        return {"approvers": tuple(name.strip() for name in self.approvers if name.strip()),
                "signing_key_value": self.signing_key.get_secret_value(),
                "approver_key_value": (self.approver_key.get_secret_value()
                                       if self.approver_key else None),
                "approval_timeout_s": self.approval_timeout_s,
                "require_verified_code": self.require_verified_code,
                "four_eyes_thresholds": thresholds}
