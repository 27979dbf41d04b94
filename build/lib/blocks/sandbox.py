"""The sandbox block: where analysis scripts run, and within which limits."""

from __future__ import annotations

from typing import Literal, Self

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from billing_recon.config import Settings
from billing_recon.errors import UserInputError
from billing_recon.sandbox.bwrap import NOBODY
from billing_recon.sandbox.port import MIB, SandboxLimits
from billing_recon.sandbox.settings import SandboxSettings
from blocks.parts import DOCS_URL, SettingsPart, conceal, reveal

Backend = Literal["local", "bwrap", "subprocess", "e2b"]
BACKENDS: tuple[Backend, ...] = ("local", "bwrap", "subprocess", "e2b")


class SandboxConfig(Block):
    """The sandbox backend that runs the model's reconciliation scripts, and its limits.

    Example:
        ```python
        from blocks.sandbox import SandboxConfig

        sandbox = SandboxConfig.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Billing Recon Sandbox"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    backend: Backend = Field(
        default="local", description="local: bubblewrap jails, falling back loudly to rlimit "
        "subprocesses; bwrap: bubblewrap or fail; subprocess: weak, development only; "
        "e2b: E2B's hosted code interpreter.")
    limits: SandboxLimits = Field(default_factory=SandboxLimits,
                                  description="Resource limits of one script run.")
    require_isolation: bool = Field(default=False,
                                    description="Refuse to run scripts without bubblewrap.")
    workers: int = Field(default=2, ge=1, description="Warm sandbox workers at most.")
    jobs_per_worker: int = Field(default=0, ge=0,
                                 description="Retire a worker after this many runs; 0 never.")
    uid: int = Field(default=NOBODY, ge=1, description="User id the jail runs as when we are root.")
    bwrap: str = Field(default="bwrap", description="The bubblewrap executable.")
    tmpfs_bytes: int = Field(default=64 * MIB, ge=MIB,
                             description="Size of the jail's /tmp and /dev/shm, in bytes.")
    e2b_api_key: SecretStr | None = Field(default=None, description="The E2B API key (e2b only).")
    e2b_template: str | None = Field(
        default=None, description="E2B template; empty uses the SDK's code-interpreter default.")
    e2b_timeout_s: int = Field(default=300, ge=1,
                               description="Lifetime of one E2B sandbox, in seconds.")

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The block that reproduces ``settings``' sandbox."""
        if settings.sandbox not in BACKENDS:
            raise UserInputError(f"sandbox backend {settings.sandbox!r} is not one of "
                                 f"{', '.join(BACKENDS)}")
        box = settings.sandbox_settings
        return cls(backend=settings.sandbox, limits=box.limits,
                   require_isolation=box.require_isolation, workers=box.workers,
                   jobs_per_worker=box.jobs_per_worker, uid=box.uid, bwrap=box.bwrap,
                   tmpfs_bytes=box.tmpfs_bytes, e2b_api_key=conceal(box.e2b_api_key),
                   e2b_template=box.e2b_template, e2b_timeout_s=box.e2b_timeout_s)

    def sandbox_settings(self) -> SandboxSettings:
        """The core's sandbox settings."""
        return SandboxSettings(
            limits=self.limits, require_isolation=self.require_isolation, workers=self.workers,
            jobs_per_worker=self.jobs_per_worker, uid=self.uid, bwrap=self.bwrap,
            tmpfs_bytes=self.tmpfs_bytes, e2b_api_key=reveal(self.e2b_api_key),
            e2b_template=self.e2b_template, e2b_timeout_s=self.e2b_timeout_s)

    def settings_part(self) -> SettingsPart:
        """This block's share of the core ``Settings``."""
        return {"sandbox": self.backend, "sandbox_settings": self.sandbox_settings()}
