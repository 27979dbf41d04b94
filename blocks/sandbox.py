"""The sandbox block: where analysis scripts run, and within which limits."""

from __future__ import annotations

from pydantic import Field

from billing_recon.config import SandboxSettings
from billing_recon.sandbox.factory import make_sandbox
from billing_recon.sandbox.port import Sandbox
from billing_recon_blocks.parts import DOCS_URL, SectionsBlock


class SandboxConfig(SectionsBlock):
    """The sandbox backend that runs the model's reconciliation scripts, and its limits.

    Example:
        ```python
        from billing_recon_blocks.sandbox import SandboxConfig

        sandbox = SandboxConfig.load("BLOCK_NAME").get_sandbox()
        ```
    """

    _block_type_name = "Billing Recon Sandbox"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    sandbox: SandboxSettings = Field(description="The backend, its pool and its limits.")

    def get_sandbox(self) -> Sandbox:
        """A sandbox of the configured backend (close it when done: it may own workers)."""
        return make_sandbox(self.sandbox)
