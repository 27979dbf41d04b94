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


def forget_result(value: object) -> None:
    """Drop the current flow run's link to the task that returned ``value``.

    Prefect remembers, for the whole run, which task returned each object a flow holds (to draw
    a task's result going into a later call as a dependency). A batch passes every opened
    ticket's id on to that ticket's run once, then never again: forgetting the link after that
    keeps a batch of 10,000 tickets from holding 10,000 of them.
    """
    context = FlowRunContext.get()
    if context is not None:
        context.run_results.pop(id(value), None)
