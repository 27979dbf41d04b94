"""The sandbox block: where analysis scripts run, and within which limits."""

from __future__ import annotations

from typing import Any, Self

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from billing_recon.config import SandboxSettings, Settings
from billing_recon.config.variables import Section
from billing_recon.sandbox.factory import make_sandbox
from billing_recon.sandbox.port import Sandbox
from billing_recon_blocks.parts import DOCS_URL, required


class SandboxConfig(Block):
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

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        return required(data, "sandbox")

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The block that holds ``settings``' sandbox section."""
        return cls(sandbox=settings.sandbox)

    def sections(self) -> dict[str, Section]:
        """The settings sections this block holds (they replace the environment's)."""
        return {"sandbox": self.sandbox}

    def get_sandbox(self) -> Sandbox:
        """A sandbox of the configured backend (close it when done: it may own workers)."""
        return make_sandbox(self.sandbox)
