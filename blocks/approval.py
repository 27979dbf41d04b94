"""The approval policy block: who may approve refunds, with which keys, for how long."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator

from billing_recon.config import ApprovalSettings, Settings
from billing_recon_blocks.parts import DOCS_URL, SectionsBlock


class ApprovalPolicy(SectionsBlock):
    """Who may approve a refund, the keys that sign and seal, and how long a proposal waits.

    Example:
        ```python
        from billing_recon_blocks.approval import ApprovalPolicy

        policy = ApprovalPolicy.load("BLOCK_NAME").approval
        ```
    """

    _block_type_name = "Billing Recon Approval Policy"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    approval: ApprovalSettings = Field(description="Approvers, keys, timeout, four eyes.")

    @model_validator(mode="after")
    def _shared_signing_key(self) -> Self:
        # Every worker verifies what another signed: a block set must carry the key itself.
        if self.approval.signing_key is None:
            raise ValueError("an approval policy block needs its signing_key")
        return self

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The block that holds ``settings``' approval section, with the keys in use (the
        generated key files' keys when none is set)."""
        keys = {"signing_key": SecretStr(settings.signing_key().decode()),
                "approver_key": SecretStr(settings.approver_key().decode())}
        return cls(approval=settings.approval.model_copy(update=keys))

