"""Where the current flow run is running: from a deployment (on a worker) or in-process."""

from __future__ import annotations

from prefect.context import FlowRunContext


def in_deployment() -> bool:
    """Whether the current flow run was created from a deployment (a worker runs it)."""
    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


def flow_run_id() -> str | None:
    """The current flow run's id, if any."""
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else None
