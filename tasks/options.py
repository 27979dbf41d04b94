"""Task options gathered in one place, so the orchestration policy reads as one table."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

# Steps whose effects are recorded by the ticket FSM never use Prefect's cache: the ticket's
# committed state is what a re-run resumes from.
STEP: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}

# Capped self-correction: 1 attempt + 3 retries, then the flow trips the circuit breaker.
ANALYSIS_RETRIES = 3
RECONCILE: dict[str, Any] = {**STEP, "retries": ANALYSIS_RETRIES, "retry_delay_seconds": 0}
