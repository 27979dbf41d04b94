"""Task options gathered in one place, so the orchestration policy reads as one table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.client.schemas.objects import State, TaskRun

from billing_recon.errors import (
    AnalysisExhausted,
    BudgetExceeded,
    GlobalBreakerOpen,
    ModelUnavailable,
    SandboxUnavailable,
)


class TaskConfig(TypedDict, total=False):
    """The Prefect task options this project sets, typed (``@task(**config)``)."""

    cache_policy: CachePolicy
    persist_result: bool
    retries: int
    retry_delay_seconds: float
    retry_condition_fn: Callable[[Any, TaskRun, State[Any]], bool]


#: Who the tasks act as in the ticket's event log.
ACTOR = "flow:process-ticket"

# Steps whose effects are recorded by the ticket FSM never use Prefect's cache: the ticket's
# committed state is what a re-run resumes from.
STEP: TaskConfig = {"cache_policy": NO_CACHE, "persist_result": False}

# Failures another attempt cannot fix: retrying would be refused, wasted, or a new spend the
# orchestrator must decide on (the SDK has already retried an unreachable model). A sandbox
# that cannot run the script is not the script's fault: no repair attempt is spent on it.
NO_RETRY = (AnalysisExhausted, BudgetExceeded, GlobalBreakerOpen, ModelUnavailable,
            SandboxUnavailable)


def retry_failed_attempt(_task: Any, _run: TaskRun, state: State[Any]) -> bool:
    """Retry a failed analysis attempt, never one of the NO_RETRY failures."""
    return not isinstance(state.data, NO_RETRY)


# Capped self-correction: the retries themselves come from the settings when the task runs
# (settings.budgets.analysis_retries, the core's own cap), then the flow trips the circuit breaker.
RECONCILE: TaskConfig = {**STEP, "retry_delay_seconds": 0,
                         "retry_condition_fn": retry_failed_attempt}
