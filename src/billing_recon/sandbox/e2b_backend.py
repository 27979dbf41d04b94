"""The E2B backend: each run gets a fresh E2B code-interpreter sandbox (a Firecracker microVM).

Per run: `Sandbox.create` (template, lifetime, no internet), the input files and the script
uploaded with `files.write`, one `run_code` cell (our `_e2b_driver.py` calling the script), the
status file and the out/ files read back with `files.read`, and `kill()` whatever happened.
The E2B SDK is imported here only, so a missing SDK only breaks this backend.

Whose fault a failure is decides what happens next, so it is sorted here:
- The script's (data in the result, a repair attempt): its own exception (`Execution.error`,
  its IPython traceback made plain by `ipython_traceback.plain_traceback`), a non-zero exit, a
  limit it ran into, output beyond the caps, running past the deadline.
- The infrastructure's (SandboxUnavailable, never a repair attempt): a missing key; an API that
  cannot create or reach a sandbox; and everything E2B's code-interpreter server makes itself:
  an error it names (`ContextRestarting` for a kernel that died, `UnexpectedEndOfExecution`,
  `WebSocketError`, `ExecutionAborted`; always with an empty traceback, which a script's own
  exception of the same name never has), an HTTP error status (404 unknown context, 5xx, the
  proxy's 502), a connection dropped mid-stream, or an SDK timeout before the run's deadline.

Limits: E2B itself enforces only the sandbox's lifetime (wall clock) and the VM's memory and
vCPUs; it sets no CPU-time, process-count or open-file limit. What can be enforced is:
the wall clock (the driver's alarm, then this client's deadline: the SDK's `timeout` and a
watchdog), address space, file size and CPU time (set by the driver on the kernel, best effort:
the kernel runs as root), stdout/stderr (capped in the sandbox, and a stream far beyond the cap
stops the run), `result` events (display output, counted and capped here, never kept), and the
out/ files read back (`max_files_bytes`). `max_processes` and `open_files` are not enforced.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from e2b import ConnectionConfig, TimeoutException
from e2b_code_interpreter import Execution
from e2b_code_interpreter import Sandbox as E2BSdkSandbox

from billing_recon.errors import SandboxUnavailable
from billing_recon.sandbox.collect import signal_error
from billing_recon.sandbox.e2b_output import OutputFlood, StreamOutput
from billing_recon.sandbox.ipython_traceback import plain_traceback
from billing_recon.sandbox.port import (
    OUTPUT_DIR,
    ExecutionError,
    SandboxLimits,
    SandboxResult,
    check_file_name,
)

ISOLATION = "e2b"
_DRIVER = Path(__file__).with_name("_e2b_driver.py").read_text(encoding="utf-8")
_EARLY = 0.1  # an SDK timeout this long before the deadline is not ours
# Errors E2B's server makes itself (template/server/messaging.py), with an empty traceback.
SERVER_ERRORS = frozenset({"ContextRestarting", "UnexpectedEndOfExecution", "WebSocketError",
                           "ExecutionAborted"})
_log = logging.getLogger(__name__)


def _driver_cell(script: str, status: str, limits: SandboxLimits) -> str:
    call = (script, status, limits.max_output_bytes, limits.wall_timeout_s,
            limits.memory_bytes, limits.file_size_bytes, limits.cpu_seconds)
    return f"{_DRIVER}\n_billing_recon_run(*{json.dumps(call)})\n"


def _server_made(execution: Execution) -> str | None:
    """'Name: value' of an error E2B's server made (not the script), else None."""
    error = execution.error
    if error is None or error.name not in SERVER_ERRORS or error.traceback:
        return None
    return f"{error.name}: {error.value}"


def _error(execution: Execution, script: str) -> ExecutionError | None:
    if execution.error is None:
        return None
    name, value = execution.error.name, execution.error.value
    return ExecutionError(name=name, value=value, traceback=plain_traceback(
        execution.error.traceback or "", script=script, name=name, value=value))


class E2BSandbox:
    """Sandbox backend on E2B's hosted code interpreter (see module doc)."""

    name = "e2b"
    isolation = ISOLATION

    def __init__(
        self,
        *,
        api_key: str | None = None,
        template: str | None = None,
        sandbox_timeout_s: int = 300,
        limits: SandboxLimits | None = None,
        api_url: str | None = None,
        sandbox_url: str | None = None,
        debug: bool | None = None,
        request_timeout_s: float = 30.0,
        client_grace_s: float = 5.0,
    ) -> None:
        """`api_url`, `sandbox_url` and `debug` point the SDK elsewhere (tests, self-hosting).

        Unset values fall back to the SDK's own environment variables (E2B_API_KEY, E2B_DEBUG,
        E2B_DOMAIN, ...). Without a key (outside debug mode): SandboxUnavailable. The client
        waits `client_grace_s` past the wall clock for the in-sandbox alarm before it gives up.
        """
        opts: dict[str, Any] = {"api_key": api_key, "api_url": api_url,
                                "sandbox_url": sandbox_url, "debug": debug}
        self._connection = {k: v for k, v in opts.items() if v is not None}
        config = ConnectionConfig(**self._connection)
        if not config.debug and not config.api_key:
            raise SandboxUnavailable(
                "E2B sandbox backend needs an API key: set E2B_API_KEY (or pick another "
                "backend with BILLING_RECON_SANDBOX)")
        self.template, self.sandbox_timeout_s = template, sandbox_timeout_s
        self.limits, self.request_timeout_s = limits or SandboxLimits(), request_timeout_s
        self.client_grace_s = client_grace_s

    def run(
        self, code: str, files: Mapping[str, bytes], *, limits: SandboxLimits | None = None
    ) -> SandboxResult:
        """Run `code` in a new E2B sandbox holding `files`; always kills that sandbox."""
        inputs = {check_file_name(name): data for name, data in files.items()}
        limits = limits or self.limits
        sandbox = self._create()
        try:
            script = self._upload(sandbox, code, inputs)
            return self._execute(sandbox, script, limits)
        finally:
            self._kill(sandbox)

    def close(self) -> None:
        """Nothing to release: every run kills its own sandbox."""

    def _create(self) -> E2BSdkSandbox:
        try:
            return E2BSdkSandbox.create(
                template=self.template, timeout=self.sandbox_timeout_s,
                allow_internet_access=False, metadata={"app": "billing-recon"},
                request_timeout=self.request_timeout_s, **self._connection)
        except Exception as exc:  # the SDK raises httpx, e2b and auth errors alike
            raise SandboxUnavailable(f"E2B API could not create a sandbox: {exc}") from exc

    def _upload(self, sandbox: E2BSdkSandbox, code: str, files: Mapping[str, bytes]) -> str:
        """Write the inputs and the script (under a name no input can take) to the home dir."""
        script = f".billing-recon-{secrets.token_hex(8)}.py"
        try:
            for name, data in {**files, script: code.encode()}.items():
                sandbox.files.write(name, data, use_octet_stream=True,
                                    request_timeout=self.request_timeout_s)
        except Exception as exc:
            raise SandboxUnavailable(f"E2B sandbox did not accept the files: {exc}") from exc
        return script

    def _execute(self, sandbox: E2BSdkSandbox, script: str, limits: SandboxLimits
                 ) -> SandboxResult:
        status_path = f"{OUTPUT_DIR}/{script.removesuffix('.py')}.json"
        output = StreamOutput(limits.max_output_bytes)
        start = time.monotonic()
        execution, problem = self._watched(sandbox, _driver_cell(script, status_path, limits),
                                           output, limits.wall_timeout_s + self.client_grace_s)
        duration = time.monotonic() - start
        if (made := _server_made(execution)) is not None:
            raise SandboxUnavailable(f"E2B's code interpreter failed the run: {made}")
        status = self._status(sandbox, status_path) if problem is None else {}
        return self._result(sandbox, script, execution, output, status, problem, limits,
                            duration)

    def _watched(self, sandbox: E2BSdkSandbox, cell: str, output: StreamOutput, deadline_s: float
                 ) -> tuple[Execution, str | None]:
        """run_code under a watchdog, in case the SDK's own deadline does not fire."""
        outcome: list[tuple[Execution, str | None] | BaseException] = []

        def call() -> None:
            try:
                outcome.append(self._run_code(sandbox, cell, output, deadline_s))
            except BaseException as exc:  # raised again in the caller's thread
                outcome.append(exc)

        thread = threading.Thread(target=call, name="e2b-run-code", daemon=True)
        thread.start()
        thread.join(deadline_s)
        if thread.is_alive() or not outcome:
            self._kill(sandbox)  # a real sandbox's death ends the stream, and the thread
            return Execution(), "timeout"
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def _run_code(self, sandbox: E2BSdkSandbox, cell: str, output: StreamOutput, timeout: float
                  ) -> tuple[Execution, str | None]:
        start = time.monotonic()
        try:
            return sandbox.run_code(cell, on_stdout=output.on_stdout, on_stderr=output.on_stderr,
                                    on_result=output.on_result, timeout=timeout,
                                    request_timeout=self.request_timeout_s), None
        except OutputFlood:
            return Execution(), "flood"
        except TimeoutException as exc:
            if time.monotonic() - start >= timeout - _EARLY:
                return Execution(), "timeout"  # our deadline: the script outlived its alarm
            raise SandboxUnavailable(f"E2B timed out before the run's deadline: {exc}") from exc
        except Exception as exc:  # an HTTP error status, the connection lost mid-stream
            raise SandboxUnavailable(f"E2B's code interpreter failed the run: "
                                     f"{type(exc).__name__}: {exc}") from exc

    def _status(self, sandbox: E2BSdkSandbox, path: str) -> dict[str, Any]:
        try:
            data = sandbox.files.read(path, format="bytes", request_timeout=self.request_timeout_s)
            status: dict[str, Any] = json.loads(bytes(data))
        except Exception as exc:
            _log.warning("E2B run left no readable status file: %s", exc)
            return {}
        return status

    def _result(self, sandbox: E2BSdkSandbox, script: str, execution: Execution,
                output: StreamOutput, status: dict[str, Any], problem: str | None,
                limits: SandboxLimits, duration: float) -> SandboxResult:
        error = _error(execution, script)
        timed_out = problem == "timeout" or bool(status.get("timed_out"))
        if problem == "flood":
            error = ExecutionError(name="OutputFlood", value="output far beyond the cap; "
                                   "the run was stopped", traceback="")
        exit_code = None if timed_out else (1 if error else int(status.get("exit_code", 1)))
        if error is None and exit_code is not None:
            error = signal_error(exit_code)  # a limit the driver set (SIGXCPU)
        files, files_truncated = self._files(sandbox, status.get("files", []), limits)
        return SandboxResult(
            stdout=output.out.text(), stderr=output.err.text(), error=error,
            timed_out=timed_out, exit_code=exit_code, duration_s=duration,
            stdout_truncated=output.out.truncated or bool(status.get("stdout_truncated")),
            stderr_truncated=output.err.truncated or bool(status.get("stderr_truncated")),
            files=files, files_truncated=files_truncated, isolation=ISOLATION)

    def _files(self, sandbox: E2BSdkSandbox, listed: list[list[Any]], limits: SandboxLimits
               ) -> tuple[dict[str, bytes], bool]:
        """The out/ files the driver listed, in path order, up to max_files_bytes in total."""
        files: dict[str, bytes] = {}
        budget, truncated = limits.max_files_bytes, False
        for rel, size in sorted(listed):
            if int(size) > budget:
                truncated = True
                continue
            try:
                data = bytes(sandbox.files.read(f"{OUTPUT_DIR}/{rel}", format="bytes",
                                                request_timeout=self.request_timeout_s))
            except Exception as exc:
                raise SandboxUnavailable(f"E2B sandbox lost the file out/{rel}: {exc}") from exc
            files[str(rel)] = data[:budget]
            budget -= len(files[str(rel)])
        return files, truncated

    def _kill(self, sandbox: E2BSdkSandbox) -> None:
        try:
            sandbox.kill()
        except Exception as exc:  # it still dies at its timeout; the result stands
            _log.warning("could not kill E2B sandbox %s: %s", sandbox.sandbox_id, exc)
