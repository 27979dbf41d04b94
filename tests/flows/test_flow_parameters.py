"""Every flow parameter explains itself in the deployment's parameter schema (what the Prefect
UI's run form shows): Prefect 3.8.8 reads the docstring's Args section, not Annotated Fields."""

from __future__ import annotations

import pytest
from prefect import Flow

from billing_recon_flows.escalation_report import escalation_report
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_flows.reconcile_inbox import reconcile_inbox

pytestmark = pytest.mark.flows


@pytest.mark.parametrize("flow", [process_ticket, reconcile_inbox, escalation_report],
                         ids=lambda f: f.name)
def test_every_parameter_of_the_deployment_schema_has_a_description(flow: Flow) -> None:
    deployment = flow.to_deployment(name="schema-check")
    properties = deployment._parameter_openapi_schema.model_dump()["properties"]
    assert properties, flow.name
    undocumented = [name for name, field in properties.items()
                    if len(field.get("description") or "") < 20]
    assert undocumented == []
