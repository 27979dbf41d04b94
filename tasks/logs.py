"""The core's log records in the flow run's logs (the Prefect UI), not only on a console.

The core logs with the standard library under ``billing_recon`` (the sandbox downgrade, layers
switched off for tests, budgets, the breaker) and knows nothing of Prefect. Prefect sends only
its own loggers to the API unless ``PREFECT_LOGGING_EXTRA_LOGGERS`` names others; instead of
asking every operator to set it, the tasks layer hands the ``billing_recon`` logger the handler
of Prefect's ``prefect.extra`` logger, wrapped so that a record made outside any flow or task
run (a command-line command) is simply not sent, rather than warned about.
"""

from __future__ import annotations

import logging
import threading

from prefect.context import FlowRunContext, TaskRunContext

CORE_LOGGER = "billing_recon"
_lock = threading.Lock()


class RunLogs(logging.Handler):
    """Passes a record to Prefect's API handler when it is made inside a flow or task run."""

    def __init__(self, api: logging.Handler) -> None:
        super().__init__(logging.NOTSET)
        self.api = api

    def emit(self, record: logging.LogRecord) -> None:
        """Forward ``record`` to the run's logs, or drop it outside a run."""
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        self.api.handle(record)


def forward_core_logs() -> None:
    """Send the core's records (at the level it logs) to the current run's logs; idempotent."""
    core = logging.getLogger(CORE_LOGGER)
    with _lock:
        if any(isinstance(handler, RunLogs) for handler in core.handlers):
            return
        for api in logging.getLogger("prefect.extra").handlers:
            core.addHandler(RunLogs(api))
