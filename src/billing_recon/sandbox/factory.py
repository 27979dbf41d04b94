"""Builds a Sandbox backend by name; the one place that knows every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from billing_recon.errors import SandboxUnavailable
from billing_recon.sandbox.local import LocalSandbox
from billing_recon.sandbox.port import Sandbox

# Later backends ("bwrap", "e2b") register here; their imports stay lazy inside the builder
# so an optional SDK that is missing only breaks the backend that needs it.
_BACKENDS: dict[str, Callable[..., Sandbox]] = {
    "local": LocalSandbox,
}


def available_backends() -> list[str]:
    """Names `make_sandbox` accepts."""
    return sorted(_BACKENDS)


def make_sandbox(backend: str = "local", **kwargs: Any) -> Sandbox:
    """A sandbox of the named backend; SandboxUnavailable when there is no such backend."""
    try:
        build = _BACKENDS[backend]
    except KeyError:
        raise SandboxUnavailable(
            f"unknown sandbox backend {backend!r}; available: {', '.join(available_backends())}"
        ) from None
    return build(**kwargs)
