"""A batch's progress as a Prefect progress artifact (a bar on the run's page in the UI)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact


@dataclass
class Progress:
    """How many of ``total`` items are done, mirrored to one progress artifact."""

    total: int
    what: str
    artifact_id: UUID
    done: int = 0

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
        """Count ``count`` more items as done and update the bar."""
        self.done = min(self.total, self.done + count)
        await aupdate_progress_artifact(self.artifact_id, self.percent,
                                        description=f"{self.done}/{self.total} {self.what}")
