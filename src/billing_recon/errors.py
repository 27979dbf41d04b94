"""Error types of billing-recon.

BillingReconError
├── UserInputError          bad input the user must fix (CLI maps it to exit code 2)
│   └── CsvLoadError         a CSV file, row and column that failed validation
├── IllegalTransition       a ticket state change the FSM forbids
├── ConcurrentTransition    the ticket moved under us (optimistic lock lost)
├── ApprovalRefused         a decision or registry change that cannot count (approver, code,
│   │                        hash, state)
│   ├── ProposalTampered     the stored proposal's MAC does not verify
│   └── ApproverLocked       the approver is locked out after too many wrong one-time codes
├── InvalidApprovalToken    the refund worker's guard
│   └── RefundRefused        the money would be refunded beyond what is owed (another ticket's)
├── UnknownCurrency         a currency missing from Stripe's table (domain/currency.py)
├── SandboxUnavailable      the sandbox failed to run the code (infrastructure, not the script)
├── AnalysisFailed          one reconciliation attempt failed (retried by the flow)
│   └── AnalysisExhausted    every allowed attempt was used; no further model call
├── ModelError              the language model gave no usable answer
│   ├── ModelUnavailable     network, timeout or HTTP error after the SDK's bounded retries
│   └── ModelOutputInvalid   an answer that does not fit the schema (refusal, cut off, bad JSON)
├── BudgetExceeded          a ticket's model budget would be exceeded; the call was not made
├── GlobalBreakerOpen       too many escalations or tokens lately; new model work waits
├── ShadowModeRefund        shadow mode (evaluation) asked for a gateway client: never built
└── GatewayError            the payment gateway refused or failed a call (mapped once, at the
    │                        adapter: payments/refunds.py)
    ├── GatewayUnavailable   no answer, or a 5xx: transient, the same key may be replayed
    ├── GatewayBusy          409: the same idempotency key is still in flight
    └── GatewayRejected      any other 4xx, with its code: nothing was refunded
"""

from __future__ import annotations


class BillingReconError(Exception):
    """Base class of every error raised by billing-recon."""


class UserInputError(BillingReconError):
    """Input the user must fix; the CLI prints it and exits with code 2."""


class CsvLoadError(UserInputError):
    """A CSV value failed validation; nothing was loaded."""

    def __init__(self, file: str, row: int | None, column: str | None, message: str) -> None:
        self.file, self.row, self.column = file, row, column
        where = file if row is None else f"{file}, row {row}"
        where = where if column is None else f"{where}, column {column!r}"
        super().__init__(f"{where}: {message}")


class IllegalTransition(BillingReconError):
    """The ticket FSM does not allow this transition."""

    def __init__(self, source: str, target: str) -> None:
        self.source, self.target = source, target
        super().__init__(f"illegal ticket transition {source} -> {target}")


class ConcurrentTransition(BillingReconError):
    """Another worker changed the ticket first; re-read it and decide again."""


class ApprovalRefused(BillingReconError):
    """A decision (or a change of the approver registry) that cannot count: unknown approver
    or administrator, wrong or spent code, stale hash, wrong state."""


class InvalidApprovalToken(BillingReconError):
    """The refund worker refuses to move money without a valid token."""


class ApproverLocked(ApprovalRefused):
    """Too many wrong one-time codes: the approver is locked out until an administrator
    unlocks them."""

    def __init__(self, approver: str, message: str) -> None:
        self.approver = approver
        super().__init__(message)


class ProposalTampered(ApprovalRefused):
    """The stored proposal does not carry a valid MAC: it was changed outside the system."""


class RefundRefused(InvalidApprovalToken):
    """A refund that would break the invariant of money owed, or that the trusted rules do not
    re-derive; ``others`` names the tickets whose money is involved."""

    def __init__(self, message: str, *, others: list[str] | None = None,
                 details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.others = others or []
        self.details = details or {}


class UnknownCurrency(BillingReconError, ValueError):
    """A currency the minor-units table does not know: its amount cannot be sent safely."""

    def __init__(self, currency: str) -> None:
        self.currency = currency
        super().__init__(f"unknown currency {currency!r}: not in Stripe's currency table, so "
                         "its minor units are unknown; nothing is sent for it")


class SandboxUnavailable(BillingReconError):
    """The sandbox could not run the code (infrastructure, not the script): no repair attempt
    is spent on it."""


class AnalysisFailed(BillingReconError):
    """One reconciliation attempt failed; carries the error shown to the model."""

    def __init__(self, message: str, *, attempt: int, script_sha: str) -> None:
        self.attempt, self.script_sha = attempt, script_sha
        super().__init__(message)


class AnalysisExhausted(AnalysisFailed):
    """Every allowed analysis attempt of the ticket failed; nothing more is tried."""


class ModelError(BillingReconError):
    """The language model gave no usable answer."""


class ModelUnavailable(ModelError):
    """The model service could not be reached or refused the request (after bounded retries)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ModelOutputInvalid(ModelError):
    """The model answered, but not with an instance of the schema; tokens were still spent.

    ``prompt_tokens``/``completion_tokens`` are None when the server's usage was not seen.
    """

    def __init__(self, message: str, *, model: str, prompt_tokens: int | None = None,
                 completion_tokens: int | None = None) -> None:
        self.model, self.prompt_tokens, self.completion_tokens = (
            model, prompt_tokens, completion_tokens)
        super().__init__(message)


class BudgetExceeded(BillingReconError):
    """A model call would take the ticket past its budget, so it was not made."""

    def __init__(self, message: str, *, details: dict[str, object]) -> None:
        self.details = details
        super().__init__(message)


class GlobalBreakerOpen(BillingReconError):
    """Escalations or token spend in the recent window passed a threshold: new model work waits."""

    def __init__(self, message: str, *, details: dict[str, object]) -> None:
        self.details = details
        super().__init__(message)


class ShadowModeRefund(BillingReconError):
    """Something asked for a gateway client during a shadow (evaluation) run, which stops at
    the approval gate: no client is built and no request leaves."""


class GatewayError(BillingReconError):
    """The payment gateway refused or failed a refund call."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        self.code, self.status = code, status
        super().__init__(message)

    @staticmethod
    def of(message: str, *, code: str | None, status: int | None) -> GatewayError:
        """The narrow type for an answer: unavailable, busy or rejected."""
        if status is None or status >= 500:
            return GatewayUnavailable(message, code=code, status=status)
        if status == 409:
            return GatewayBusy(message, code=code, status=status)
        return GatewayRejected(message, code=code, status=status)


class GatewayUnavailable(GatewayError):
    """No answer (network, timeout) or a server error: transient; replaying the key is safe."""


class GatewayBusy(GatewayError):
    """409: a request with the same idempotency key is still in flight."""


class GatewayRejected(GatewayError):
    """A 4xx other than 409 (``code`` says why): the gateway created nothing."""
