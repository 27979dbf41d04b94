"""The approval policy block: who may approve refunds, with which proof, for how long.

It holds no key: the signing and approver keys stay in each host's environment or key files
(``settings.KeySettings``), out of reach of Prefect API clients, who can read block secrets."""

from __future__ import annotations

from pydantic import Field

from billing_recon.config import ApprovalSettings
from billing_recon_blocks.parts import DOCS_URL, SectionsBlock


class ApprovalPolicy(SectionsBlock):
    """Who may approve a refund, with which proof, and how long a proposal waits.

    Example:
        ```python
        from billing_recon_blocks.approval import ApprovalPolicy

        policy = ApprovalPolicy.load("BLOCK_NAME").approval
        ```
    """

    _block_type_name = "Billing Recon Approval Policy"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    approval: ApprovalSettings = Field(description="Approvers, codes, timeout, four eyes.")
