"""Prefect Blocks (installed as ``billing_recon_blocks``): typed configuration and secrets.

One block per concern (database, model endpoint, sandbox, payment gateway, approval policy,
mail servers),
each holding sections of the core's settings tree and handing out a configured client; the
blocks saved under one name form a block set, which ``billing_recon_blocks.settings`` turns
into the core's ``Settings``. The core never imports this package.
``prefect block register -m billing_recon_blocks`` registers the types found here;
``billing-recon blocks register`` also saves a block set.
"""

from billing_recon_blocks.approval import ApprovalPolicy
from billing_recon_blocks.database import BillingDatabase
from billing_recon_blocks.gateway import PaymentGateway
from billing_recon_blocks.llm import LlmEndpoint
from billing_recon_blocks.mail import MailServers
from billing_recon_blocks.sandbox import SandboxConfig

__all__ = ["ApprovalPolicy", "BillingDatabase", "LlmEndpoint", "MailServers", "PaymentGateway",
           "SandboxConfig"]
