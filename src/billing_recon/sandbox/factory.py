"""Builds a Sandbox backend by name; the one place that knows every backend.

Scripts written by a real model (``untrusted``) run only in strong isolation, the bubblewrap
pool or E2B: where neither is to be had, building the sandbox is refused with one message,
unless ``allow_weak_isolation`` is set (development only, logged loudly). The weak backend is
for the offline model's own reference script.

- `local` (default): the warm bubblewrap pool when bubblewrap works here; otherwise, unless
  strong isolation is required, the weak `subprocess` backend with a loud warning. Each result
  names the isolation actually used, and the pipeline logs it with the ticket.
- `bwrap`: the warm bubblewrap pool or SandboxUnavailable.
- `subprocess`: the weak rlimit-subprocess backend (development only).
- `e2b`: E2B's hosted code interpreter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from billing_recon.config.sandbox import BACKENDS, SandboxSettings
from billing_recon.errors import SandboxUnavailable, UserInputError
from billing_recon.sandbox.bwrap import Jail, probe
from billing_recon.sandbox.local import WarmPool
from billing_recon.sandbox.port import Sandbox
from billing_recon.sandbox.subprocess_sandbox import SubprocessSandbox

_log = logging.getLogger(__name__)
DOWNGRADE_WARNING = (
    "SANDBOX ISOLATION DOWNGRADED to 'rlimit-subprocess': bubblewrap cannot run here (%s). "
    "Analysis scripts will run as this user, with network access and host files in reach. "
    "Set BILLING_RECON_SANDBOX_REQUIRE_ISOLATION=true to refuse instead."
)


def _bwrap(settings: SandboxSettings) -> Sandbox:
    jail = Jail.for_this_python(settings.bwrap, settings.uid, settings.tmpfs_bytes)
    reason = probe(jail)
    if reason is not None:
        raise SandboxUnavailable(f"bubblewrap isolation is unavailable: {reason}")
    return WarmPool(jail, workers=settings.workers, limits=settings.limits,
                    jobs_per_worker=settings.jobs_per_worker)


def _subprocess(settings: SandboxSettings) -> Sandbox:
    if settings.require_isolation:
        raise SandboxUnavailable(
            "the 'subprocess' sandbox is weak, and strong isolation is required "
            "(BILLING_RECON_SANDBOX_REQUIRE_ISOLATION)")
    return SubprocessSandbox(limits=settings.limits)


def _local(settings: SandboxSettings) -> Sandbox:
    try:
        return _bwrap(settings)
    except SandboxUnavailable as exc:
        if settings.require_isolation:
            raise SandboxUnavailable(
                f"strong isolation is required (BILLING_RECON_SANDBOX_REQUIRE_ISOLATION) "
                f"and {exc}") from exc
        _log.warning(DOWNGRADE_WARNING, exc)
    return SubprocessSandbox(limits=settings.limits)


def _e2b(settings: SandboxSettings) -> Sandbox:
    from billing_recon.sandbox.e2b_backend import E2BSandbox  # the SDK only when asked for

    key = settings.e2b_api_key.get_secret_value() if settings.e2b_api_key else None
    return E2BSandbox(api_key=key, template=settings.e2b_template,
                      sandbox_timeout_s=settings.e2b_timeout_s, limits=settings.limits)


_BACKENDS: dict[str, Callable[[SandboxSettings], Sandbox]] = {
    "local": _local,
    "bwrap": _bwrap,
    "subprocess": _subprocess,
    "e2b": _e2b,
}


def available_backends() -> list[str]:
    """Names of the backends `make_sandbox` builds."""
    return sorted(BACKENDS)


UNCONFINED_REFUSED = (
    "scripts written by the {model} model must run in strong isolation (bubblewrap or E2B), "
    "and {reason}. Install bubblewrap (Debian: apt-get install bubblewrap), or set "
    "BILLING_RECON_SANDBOX=e2b with E2B_API_KEY; only for development, "
    "BILLING_RECON_SANDBOX_ALLOW_WEAK_ISOLATION=true runs them unconfined")
UNCONFINED_WARNING = (
    "UNCONFINED MODEL CODE: scripts written by the %s model run in the weak 'rlimit-subprocess' "
    "sandbox as this user, with this user's files, keys and network in reach, because "
    "BILLING_RECON_SANDBOX_ALLOW_WEAK_ISOLATION is set. Never do this with real money.")


def make_sandbox(settings: SandboxSettings, *, untrusted_by: str | None = None) -> Sandbox:
    """A sandbox of the backend ``settings`` names; SandboxUnavailable when it cannot be had.

    ``untrusted_by`` names the model whose scripts will run (None: only the offline model's
    reference script): those need strong isolation, else UserInputError at start.
    """
    build = _BACKENDS[settings.backend]
    if untrusted_by is None:
        return build(settings)
    if not settings.allow_weak_isolation:
        try:
            return build(settings.model_copy(update={"require_isolation": True}))
        except SandboxUnavailable as exc:
            reason = str(exc).removeprefix("the 'subprocess' sandbox is weak, and ")
            raise UserInputError(UNCONFINED_REFUSED.format(model=untrusted_by,
                                                           reason=reason)) from exc
    box = build(settings)
    if box.isolation == SubprocessSandbox.isolation:
        _log.warning(UNCONFINED_WARNING, untrusted_by)
    return box
