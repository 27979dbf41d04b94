"""Running the analysis agent's untrusted pandas scripts.

`port` defines the contract (`Sandbox`, `SandboxLimits`, `SandboxResult`, `ExecutionError`):
the script's own failures — exceptions, non-zero exits, timeouts, output floods — come back as
data in the result; only a backend that cannot run anything raises `SandboxUnavailable`.
Backends, each in the file named after it: `local.WarmPool` (backend "local", the default:
warm workers in bubblewrap jails, `bwrap.Jail`), `subprocess_sandbox.SubprocessSandbox` (backend
"subprocess", the weak "rlimit-subprocess" fallback) and `e2b_backend.E2BSandbox`;
`factory.make_sandbox` picks one by name, configured by `settings.SandboxSettings`.
"""

from billing_recon.sandbox.bwrap import Jail
from billing_recon.sandbox.factory import available_backends, make_sandbox
from billing_recon.sandbox.local import WarmPool
from billing_recon.sandbox.port import (
    ExecutionError,
    Sandbox,
    SandboxLimits,
    SandboxResult,
    check_file_name,
)
from billing_recon.sandbox.settings import SandboxSettings
from billing_recon.sandbox.subprocess_sandbox import SubprocessSandbox

__all__ = [
    "ExecutionError",
    "Jail",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "SandboxSettings",
    "SubprocessSandbox",
    "WarmPool",
    "available_backends",
    "check_file_name",
    "make_sandbox",
]
