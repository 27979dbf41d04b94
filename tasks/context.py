"""Where the current flow run is running: from a deployment (on a worker) or in-process."""

from __future__ import annotations

from prefect.context import FlowRunContext
from prefect.utilities.collections import visit_collection


def in_deployment() -> bool:
    """Whether the current flow run was created from a deployment (a worker runs it)."""
    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


def flow_run_id() -> str | None:
    """The current flow run's id, if any."""
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else None


def forget_result(value: object) -> None:
    """Drop the current flow run's links to the task or subflow that returned ``value``.

    Prefect remembers, for the whole run, which task or subflow returned each object a flow
    holds, and each item one level inside it (to draw a result going into a later call as a
    dependency). A batch passes every opened ticket's id on to that ticket's run once, and
    keeps each ticket's result only to return it: forgetting the links after that keeps a
    batch of 10,000 tickets from holding tens of thousands of them. The same walk as
    Prefect's own linking (``link_state_to_result``) finds them.
    """
    context = FlowRunContext.get()
    if context is not None:
        visit_collection(value, lambda item: context.run_results.pop(id(item), None),
                         max_depth=1)
