"""One ticket-id type across flows: process-ticket and escalation-report take the same
``ticket_id`` parameter (an integer or ``T-000042``) and validate it to the same integer."""

from __future__ import annotations

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from billing_recon.domain.ticket_id import format_ticket_id, parse_ticket_id
from billing_recon_flows.escalation_report import escalation_report
from billing_recon_flows.process_ticket import process_ticket

FLOWS = [process_ticket, escalation_report]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
@pytest.mark.parametrize("given", [42, "42", "T-000042", "t-42", " T-42 "])
def test_every_form_of_a_ticket_id_validates_to_the_same_number(flow: object,
                                                                given: object) -> None:
    assert flow.validate_parameters({"ticket_id": given})["ticket_id"] == 42  # type: ignore[attr-defined]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
@pytest.mark.parametrize("given", ["X-1", "T-", "T-0", 0, -3, "forty-two"])
def test_a_bad_ticket_id_is_refused_before_the_run(flow: object, given: object) -> None:
    with pytest.raises(ParameterTypeError):
        flow.validate_parameters({"ticket_id": given})  # type: ignore[attr-defined]


def test_both_flows_show_the_same_ticket_id_field_in_the_ui() -> None:
    schemas = [parameter_schema(flow.fn).model_dump() for flow in FLOWS]
    optional, required = (s["properties"]["ticket_id"] for s in schemas)
    accepted = required["anyOf"]
    assert optional["anyOf"][0]["anyOf"] == accepted  # process-ticket's may also be empty
    assert {"type": "integer", "minimum": 1} in accepted
    assert "e.g. T-000042" in required["description"]


def test_the_public_form_round_trips() -> None:
    assert format_ticket_id(42) == "T-000042"
    assert parse_ticket_id(format_ticket_id(7)) == 7
