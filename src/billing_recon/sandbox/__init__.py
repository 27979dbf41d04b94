"""Running the analysis agent's untrusted pandas scripts.

`port` defines the contract (`Sandbox`, `SandboxLimits`, `SandboxResult`, `ExecutionError`):
the script's own failures — exceptions, non-zero exits, timeouts, output floods — come back as
data in the result; only a backend that could not run the code raises `SandboxUnavailable`.
Backends, each in the file named after it: `local.WarmPool` (backend "local", the default:
warm workers in bubblewrap jails, `bwrap.Jail`), `subprocess_sandbox.SubprocessSandbox` (backend
"subprocess", the weak "rlimit-subprocess" fallback) and `e2b_backend.E2BSandbox`;
`factory.make_sandbox` builds the one `config.sandbox.SandboxSettings` names. Import each from
its module: this package imports nothing, so no import of one part drags in the others.
"""
