"""Prefect Blocks: typed configuration and secrets that build the core's settings.

One block per concern (database, model endpoint, sandbox, payment gateway, approval policy);
the blocks saved under one name form a block set, which ``blocks.settings`` turns into the
core's ``Settings``. The core never imports this package. ``prefect block register -m blocks``
registers the types found here; ``billing-recon blocks register`` also saves a block set.
"""

from blocks.approval import ApprovalPolicy
from blocks.database import BillingDatabase
from blocks.gateway import PaymentGateway
from blocks.llm import LlmEndpoint
from blocks.sandbox import SandboxConfig

__all__ = ["ApprovalPolicy", "BillingDatabase", "LlmEndpoint", "PaymentGateway", "SandboxConfig"]
