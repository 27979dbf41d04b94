"""Access to the process-wide core dependencies from inside tasks and flows.

The settings come from Prefect blocks when blocks are in use, else from the environment:
blocks are in use when the setting ``orchestration.blocks`` (``BILLING_RECON_BLOCKS``) names a
block set, or when the flow run was created from a deployment and blocks are saved under the
default name.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar, overload

from billing_recon import runtime
from billing_recon.config import Settings, load
from billing_recon.errors import UserInputError
from billing_recon.steps.deps import Deps
from billing_recon_tasks.context import flow_run_id, in_deployment
from billing_recon_tasks.logs import forward_core_logs

P = ParamSpec("P")
R = TypeVar("R")
_lock = threading.Lock()
# Per process: every task asks for deps, and the server must not be asked each time. A worker
# starts a process per flow run, so an edited block takes effect with the next run.
_loaded: dict[tuple[str, bool], Settings | None] = {}
# The settings each flow run started with, by run id (issue 19): the flow and its tasks ask for
# deps 15-20 times per ticket, and reading the environment again each time was 0.25 ms of CPU
# per call. A changed variable or block takes effect with the next run, as a worker's new
# process per run always did. The last RUNS_KEPT runs are kept (a batch runs several at once).
RUNS_KEPT = 64
_per_run: OrderedDict[str, Settings] = OrderedDict()


def deps() -> Deps:
    """The core dependencies for the current configuration (built once per process; the
    configuration is read once per flow run, else on every call)."""
    forward_core_logs()  # first, so that building them reports into the run (sandbox, layers)
    return runtime.build(run_settings())


def run_settings() -> Settings:
    """The settings of the current flow run (read at its first call), else read now."""
    run = flow_run_id()
    with _lock:
        found = _per_run.get(run) if run else None
    if found is not None:
        return found
    environment = load()  # it also names the block set, if any
    settings = block_settings(environment) or environment
    if run:
        with _lock:
            _per_run[run] = settings
            while len(_per_run) > RUNS_KEPT:
                _per_run.popitem(last=False)
    return settings


def block_settings(environment: Settings | None = None) -> Settings | None:
    """The settings from the block set in use, or None when the environment decides
    (``environment``: the settings already loaded from it, else they are loaded here)."""
    explicit = (environment or load()).orchestration.blocks
    if explicit:
        return _load(explicit, required=True)
    if in_deployment():
        from billing_recon_blocks.settings import DEFAULT_BLOCK_SET

        return _load(DEFAULT_BLOCK_SET, required=False)
    return None


def _load(name: str, required: bool) -> Settings | None:
    with _lock:
        if (name, required) in _loaded:
            return _loaded[(name, required)]
    from billing_recon_blocks.settings import (
        load_block_set,  # Prefect's client only when blocks are used
    )

    found = load_block_set(name)
    if required and not found.found():
        raise UserInputError(f"BILLING_RECON_BLOCKS={name!r}: no billing-recon block is saved "
                             "under that name (billing-recon blocks register --name NAME "
                             "saves them)")
    settings = found.settings() if found.found() else None
    with _lock:
        return _loaded.setdefault((name, required), settings)


def forget_block_settings() -> None:
    """Load the blocks, and each run's settings, again on next use (tests; a long-lived process
    after editing blocks)."""
    with _lock:
        _loaded.clear()
        _per_run.clear()


async def in_thread(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run blocking core code off the event loop so paused tickets never block others."""
    return await asyncio.to_thread(fn, *args, **kwargs)


@overload
def host_path(path: str) -> str: ...
@overload
def host_path(path: None) -> None: ...
def host_path(path: str | None) -> str | None:
    """A path a run was given, on this host. A deployed run starts in a worker's new temporary
    folder, so a relative path is taken under the inbox root (``orchestration.inbox_root``,
    else the home folder) there; a local run keeps it relative to its working directory."""
    if path is None or not in_deployment():
        return path
    given = Path(path).expanduser()
    if given.is_absolute():
        return str(given)
    settings = deps().settings
    return str((settings.orchestration.inbox_root or settings.home).expanduser() / given)
