"""Access to the process-wide core dependencies from inside tasks and flows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from billing_recon import runtime
from billing_recon.steps.deps import Deps

P = ParamSpec("P")
R = TypeVar("R")


def deps() -> Deps:
    """The core dependencies for the current environment (built once per process)."""
    return runtime.build()


async def in_thread(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run blocking core code off the event loop so paused tickets never block others."""
    return await asyncio.to_thread(fn, *args, **kwargs)
