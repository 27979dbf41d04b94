"""What every step needs, built once per process from Settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from billing_recon.config import Settings
from billing_recon.llm.port import ChatModel
from billing_recon.steps.switches import Switches
from billing_recon.store.tickets import Sessions

if TYPE_CHECKING:
    from billing_recon.payments.refunds import RefundClient
    from billing_recon.sandbox.port import Sandbox


@dataclass
class Deps:
    """Settings, the database, the model, the sandbox and a way to reach the gateway."""

    settings: Settings
    sessions: Sessions
    model: ChatModel
    sandbox: Sandbox
    refund_client: Callable[[], RefundClient]
    # Test switches (layers off, crash points); the default is production: none.
    switches: Switches = field(default_factory=Switches)
