"""The one configuration of billing-recon (see ``config.settings`` and docs/configuration.md)."""

from billing_recon.config.intake import IntakeSettings
from billing_recon.config.llm import LlmBudget, ModelSettings, Price
from billing_recon.config.sandbox import SandboxSettings
from billing_recon.config.sections import (
    ApprovalSettings,
    DatabaseSettings,
    GatewaySettings,
    KeySettings,
    OrchestrationSettings,
    SwitchSettings,
)
from billing_recon.config.settings import (
    Settings,
    file_variables,
    from_variables,
    load,
    secret_fingerprint,
    with_variables,
)
from billing_recon.config.webhooks import WebhookSettings

__all__ = ["ApprovalSettings", "DatabaseSettings", "GatewaySettings", "IntakeSettings",
           "KeySettings", "LlmBudget", "ModelSettings", "OrchestrationSettings", "Price",
           "SandboxSettings", "Settings", "SwitchSettings", "WebhookSettings", "file_variables",
           "from_variables", "load", "secret_fingerprint", "with_variables"]
