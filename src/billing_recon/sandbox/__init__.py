"""Running the analysis agent's untrusted pandas scripts.

`port` defines the contract (`Sandbox`, `SandboxLimits`, `SandboxResult`, `ExecutionError`):
the script's own failures — exceptions, non-zero exits, timeouts, output floods — come back as
data in the result; only a backend that cannot run anything raises `SandboxUnavailable`.
`local` is the weak "rlimit-subprocess" backend; `factory.make_sandbox` picks one by name.
"""

from billing_recon.sandbox.factory import available_backends, make_sandbox
from billing_recon.sandbox.local import LocalSandbox
from billing_recon.sandbox.port import (
    ExecutionError,
    Sandbox,
    SandboxLimits,
    SandboxResult,
    check_file_name,
)

__all__ = [
    "ExecutionError",
    "LocalSandbox",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "available_backends",
    "check_file_name",
    "make_sandbox",
]
