"""Sandbox settings, read from the environment (`BILLING_RECON_SANDBOX_*` and `E2B_API_KEY`).

| variable | meaning (default) |
|---|---|
| BILLING_RECON_SANDBOX | `local` (bwrap pool, else loud fallback), `bwrap`, `subprocess`, `e2b` |
| BILLING_RECON_SANDBOX_REQUIRE_ISOLATION | `true`: refuse to run without bubblewrap (false) |
| BILLING_RECON_SANDBOX_WORKERS | warm workers at most (2) |
| BILLING_RECON_SANDBOX_JOBS_PER_WORKER | retire a worker after this many jobs; 0 never (0) |
| BILLING_RECON_SANDBOX_UID | uid the jail runs as when we are root (65534) |
| BILLING_RECON_SANDBOX_BWRAP | the bubblewrap executable (`bwrap`) |
| BILLING_RECON_SANDBOX_TMPFS_BYTES | size of the jail's /tmp and /dev/shm (64 MiB) |
| BILLING_RECON_SANDBOX_<LIMIT> | a `SandboxLimits` field, e.g. `_CPU_SECONDS`, `_WALL_TIMEOUT_S` |
| E2B_API_KEY | the E2B key (none) |
| BILLING_RECON_SANDBOX_E2B_TEMPLATE | E2B template (the SDK's code-interpreter default) |
| BILLING_RECON_SANDBOX_E2B_TIMEOUT_S | lifetime of an E2B sandbox in seconds (300) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from billing_recon.errors import UserInputError
from billing_recon.sandbox.bwrap import NOBODY
from billing_recon.sandbox.port import MIB, SandboxLimits

PREFIX = "BILLING_RECON_SANDBOX_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in _TRUE | _FALSE:
        raise UserInputError(f"{name}={raw!r} must be true or false")
    return raw in _TRUE


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserInputError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise UserInputError(f"{name}={raw!r} must be at least {minimum}")
    return value


def limits_from_env(env: Mapping[str, str]) -> SandboxLimits:
    """SandboxLimits with each field overridable as BILLING_RECON_SANDBOX_<FIELD>."""
    given = {name: env[key].strip() for name in SandboxLimits.model_fields
             if (key := PREFIX + name.upper()) in env and env[key].strip()}
    try:
        return SandboxLimits.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(f"{PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                             for e in exc.errors())
        raise UserInputError(f"bad sandbox limits: {problems}") from None


@dataclass(frozen=True)
class SandboxSettings:
    """How sandboxes are built (the backend name itself is `Settings.sandbox`)."""

    limits: SandboxLimits = field(default_factory=SandboxLimits)
    require_isolation: bool = False
    workers: int = 2
    jobs_per_worker: int = 0
    uid: int = NOBODY
    bwrap: str = "bwrap"
    tmpfs_bytes: int = 64 * MIB
    e2b_api_key: str | None = field(default=None, repr=False)
    e2b_template: str | None = None
    e2b_timeout_s: int = 300

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SandboxSettings:
        """Settings from `env` (default: os.environ); a bad value is a UserInputError."""
        env = os.environ if env is None else env
        return cls(
            limits=limits_from_env(env),
            require_isolation=_flag(env, PREFIX + "REQUIRE_ISOLATION"),
            workers=_int(env, PREFIX + "WORKERS", 2, minimum=1),
            jobs_per_worker=_int(env, PREFIX + "JOBS_PER_WORKER", 0),
            uid=_int(env, PREFIX + "UID", NOBODY, minimum=1),
            bwrap=env.get(PREFIX + "BWRAP", "").strip() or "bwrap",
            tmpfs_bytes=_int(env, PREFIX + "TMPFS_BYTES", 64 * MIB, minimum=MIB),
            e2b_api_key=env.get("E2B_API_KEY", "").strip() or None,
            e2b_template=env.get(PREFIX + "E2B_TEMPLATE", "").strip() or None,
            e2b_timeout_s=_int(env, PREFIX + "E2B_TIMEOUT_S", 300, minimum=1),
        )
