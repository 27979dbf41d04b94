"""Sandbox settings: the backend that runs analysis scripts, its pool and its limits.

Set by ``BILLING_RECON_SANDBOX`` (the backend), ``BILLING_RECON_SANDBOX_*`` (each field, and
each ``SandboxLimits`` field such as ``BILLING_RECON_SANDBOX_CPU_SECONDS``) and ``E2B_API_KEY``;
the ``SandboxConfig`` block holds the same section.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, SecretStr

from billing_recon.config.variables import Env, Section
from billing_recon.sandbox.bwrap import NOBODY
from billing_recon.sandbox.port import MIB, SandboxLimits

Backend = Literal["local", "bwrap", "subprocess", "e2b"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)


class SandboxSettings(Section):
    """Where the model's reconciliation scripts run, and within which limits."""

    env_prefix = "BILLING_RECON_SANDBOX_"

    backend: Annotated[Backend, Env("BILLING_RECON_SANDBOX")] = Field(
        default="local", description="local: warm bubblewrap jails, falling back loudly to "
        "rlimit subprocesses; bwrap: bubblewrap or fail; subprocess: weak, development only; "
        "e2b: E2B's hosted code interpreter.")
    limits: SandboxLimits = Field(default_factory=SandboxLimits,
                                  description="Resource limits of one script run.")
    require_isolation: bool = Field(
        default=False, description="Refuse to run any script without bubblewrap, the offline "
        "model's own reference script included (production).")
    allow_weak_isolation: bool = Field(
        default=False, description="Development only: let scripts written by a real model "
        "(any model but offline) run in the weak subprocess sandbox when bubblewrap is missing. "
        "They then run as this user, with its files, keys and network in reach; logged loudly. "
        "Unset, such a configuration is refused when the command starts.")
    workers: int = Field(default=2, ge=1, description="Warm sandbox workers at most.")
    jobs_per_worker: int = Field(default=0, ge=0,
                                 description="Retire a worker after this many runs; 0 never.")
    uid: int = Field(default=NOBODY, ge=1,
                     description="User id the jail runs as when we are root.")
    bwrap: str = Field(default="bwrap", min_length=1,
                       description="The bubblewrap executable.")
    tmpfs_bytes: int = Field(default=64 * MIB, ge=MIB,
                             description="Size of the jail's /tmp and /dev/shm, in bytes.")
    e2b_api_key: Annotated[SecretStr | None, Env("E2B_API_KEY")] = Field(
        default=None, description="The E2B API key (backend e2b only).")
    e2b_template: str | None = Field(
        default=None, description="E2B template; unset uses the SDK's code-interpreter default.")
    e2b_timeout_s: int = Field(default=300, ge=1,
                               description="Lifetime of one E2B sandbox, in seconds.")
