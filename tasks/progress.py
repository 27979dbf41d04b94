"""A batch's progress as a Prefect progress artifact (a bar on the run's page in the UI)."""

from __future__ import annotations

from dataclasses import dataclass
from time import monotonic
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

#: The bar is updated at most this often (and always at the end): a batch of 10,000 tickets
#: at several a second would otherwise spend an API call per ticket on it.
UPDATE_EVERY_S = 1.0


@dataclass
class Progress:
    """How many of ``total`` items are done, mirrored to one progress artifact."""

    total: int
    what: str
    artifact_id: UUID
    done: int = 0
    updated_at: float = 0.0

    @classmethod
    async def start(cls, total: int, what: str) -> Progress:
        """Create the artifact at 0 % (100 % for an empty batch)."""
        artifact_id = await acreate_progress_artifact(
            0.0 if total else 100.0, description=f"0/{total} {what}")
        return cls(total, what, artifact_id)

    @property
    def percent(self) -> float:
        """Share done, in percent."""
        return 100.0 * self.done / self.total if self.total else 100.0

    async def advance(self, count: int = 1) -> None:
        """Count ``count`` more items as done and update the bar (see UPDATE_EVERY_S)."""
        self.done = min(self.total, self.done + count)
        now = monotonic()
        if self.done < self.total and now - self.updated_at < UPDATE_EVERY_S:
            return
        self.updated_at = now
        await aupdate_progress_artifact(self.artifact_id, self.percent,
                                        description=f"{self.done}/{self.total} {self.what}")
