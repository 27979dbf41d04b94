"""Task options gathered in one place, so the orchestration policy reads as one table."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from billing_recon.errors import (
    AnalysisExhausted,
    BudgetExceeded,
    GlobalBreakerOpen,
    ModelUnavailable,
)

# Steps whose effects are recorded by the ticket FSM never use Prefect's cache: the ticket's
# committed state is what a re-run resumes from.
STEP: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}

# Failures another attempt cannot fix: retrying would be refused, wasted, or a new spend the
# orchestrator must decide on (the SDK has already retried an unreachable model).
NO_RETRY = (AnalysisExhausted, BudgetExceeded, GlobalBreakerOpen, ModelUnavailable)


def retry_failed_attempt(_task: Any, _run: TaskRun, state: State[Any]) -> bool:
    """Retry a failed analysis attempt, never one of the NO_RETRY failures."""
    return not isinstance(state.data, NO_RETRY)


# Capped self-correction: 1 attempt + 3 retries, then the flow trips the circuit breaker.
ANALYSIS_RETRIES = 3
RECONCILE: dict[str, Any] = {**STEP, "retries": ANALYSIS_RETRIES, "retry_delay_seconds": 0,
                             "retry_condition_fn": retry_failed_attempt}
