"""The Sandbox port: what every backend (local, bubblewrap, E2B) promises the analysis agent.

A failure of the user's code is data in a `SandboxResult` (an exception, a non-zero exit, a
timeout, an output flood); a backend raises `SandboxUnavailable` only when it could not run
the code at all (it cannot start, or its service failed the run). This mirrors e2b's
`Execution.error`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# pandas (OpenBLAS, its allocator arenas) hangs at import with less address space than this.
MIN_MEMORY_BYTES = 1 * GIB

OUTPUT_DIR = "out"
"""Directory, inside the run's working directory, whose files come back in the result."""


def check_file_name(name: str) -> str:
    """Return `name` if it is a plain file name for the working directory, else ValueError.

    Every backend applies this rule, so a name can never reach outside the run's directory.
    """
    bad = not name or name in {".", "..", OUTPUT_DIR} or len(name.encode()) > 255
    if bad or any(ch in name for ch in "/\\\0"):
        raise ValueError(
            f"sandbox input file name {name!r} must be a plain file name "
            f"(no path separators, not '.', '..' or {OUTPUT_DIR!r})"
        )
    return name


class SandboxLimits(BaseModel):
    """Resource limits of one run; backends enforce what their isolation level can."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_seconds: int = Field(default=20, ge=1, description="CPU time of the process (RLIMIT_CPU).")
    memory_bytes: int = Field(
        default=2 * GIB, description="Address space (RLIMIT_AS); at least 1 GiB."
    )
    file_size_bytes: int = Field(
        default=64 * MIB, ge=1, description="Largest file the code may write."
    )
    max_processes: int = Field(default=64, ge=1, description="Processes of the run (RLIMIT_NPROC).")
    open_files: int = Field(
        default=256, ge=16, description="Open file descriptors (RLIMIT_NOFILE)."
    )
    wall_timeout_s: float = Field(
        default=30.0, gt=0, description="Wall clock before the run is killed."
    )
    max_output_bytes: int = Field(
        default=1 * MIB, ge=1, description="Kept bytes of stdout and stderr."
    )
    max_files_bytes: int = Field(
        default=64 * MIB, ge=0, description="Total bytes of out/ files returned."
    )

    @field_validator("memory_bytes")
    @classmethod
    def _memory_floor(cls, value: int) -> int:
        if value < MIN_MEMORY_BYTES:
            raise ValueError(
                f"memory_bytes={value} is below 1 GiB ({MIN_MEMORY_BYTES}); "
                "pandas hangs at import with less address space"
            )
        return value


class ExecutionError(BaseModel):
    """An uncaught exception (or fatal signal) of the user's code, like e2b's Execution.error."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Exception class name, e.g. 'ZeroDivisionError'.")
    value: str = Field(description="str() of the exception.")
    traceback: str = Field(description="Formatted traceback, user code frames only.")


class SandboxResult(BaseModel):
    """Everything one run produced; the user's failures are data here, never exceptions."""

    model_config = ConfigDict(frozen=True)

    stdout: str
    stderr: str
    error: ExecutionError | None = None
    timed_out: bool = False
    exit_code: int | None = Field(description="None when the run was killed on timeout.")
    duration_s: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    files: dict[str, bytes] = Field(
        default_factory=dict, description="Files written under out/, by relative POSIX path."
    )
    files_truncated: bool = Field(
        default=False, description="Some out/ files exceeded max_files_bytes."
    )
    isolation: str = Field(description="Isolation level actually used, e.g. 'rlimit-subprocess'.")

    @property
    def ok(self) -> bool:
        """True when the code ran to completion: no error, no timeout, exit code 0."""
        return self.error is None and not self.timed_out and self.exit_code == 0

    def parse_json_stdout(self) -> Any:
        """The last non-empty stdout line parsed as JSON; ValueError if there is none."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        hint = " (stdout was truncated)" if self.stdout_truncated else ""
        if not lines:
            raise ValueError(f"stdout is empty; expected JSON on its last line{hint}")
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"last stdout line is not JSON{hint}: {lines[-1][:200]!r} ({exc})"
            ) from exc


@runtime_checkable
class Sandbox(Protocol):
    """Runs untrusted Python with input files and returns a `SandboxResult`.

    Implementations raise `SandboxUnavailable` only for infrastructure failures and
    `ValueError` for a bad file name; everything the code does wrong is in the result.
    """

    name: str
    isolation: str  # the level every result of this sandbox reports

    def run(
        self, code: str, files: Mapping[str, bytes], *, limits: SandboxLimits | None = None
    ) -> SandboxResult:
        """Run `code` in a fresh working directory holding `files`; None uses default limits."""
        ...

    def close(self) -> None:
        """Release backend resources (warm workers, remote VMs); idempotent."""
        ...
