"""Typed boundaries of the money path: the script's summary, reason codes, gateway errors."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from billing_recon.domain import rules
from billing_recon.domain.summary import SandboxSummary
from billing_recon.errors import GatewayBusy, GatewayError, GatewayRejected, GatewayUnavailable

GOOD = {"invoices": {"INV-000001": {"refundable": "6.60", "reasons": ["price_overcharge"],
                                    "currency": "USD", "net_paid": "39.60"}}}


def test_a_well_formed_summary_is_typed_and_keeps_extra_fields() -> None:
    summary = SandboxSummary.parse(GOOD, ["INV-000001"])
    finding = summary.invoices["INV-000001"]
    assert (finding.refundable, finding.reasons, finding.currency) == (
        "6.60", ["price_overcharge"], "USD")


@pytest.mark.parametrize(("change", "message"), [
    ({"refundable": "6.6"}, "refundable"),
    ({"refundable": 6.60}, "refundable"),
    ({"reasons": ["overcharged"]}, "reasons"),
    ({"reasons": "price_overcharge"}, "reasons"),
])
def test_a_malformed_finding_is_refused_naming_the_field(change: dict[str, Any],
                                                          message: str) -> None:
    bad = {"invoices": {"INV-000001": {**GOOD["invoices"]["INV-000001"], **change}}}
    with pytest.raises(ValueError, match=f"invoices.INV-000001.{message}"):
        SandboxSummary.parse(bad, ["INV-000001"])


@pytest.mark.parametrize("data", [[], {"invoice": {}}, {"invoices": []}, "6.60"])
def test_output_that_is_not_a_summary_is_refused(data: Any) -> None:
    with pytest.raises(ValueError, match="expected a JSON object"):
        SandboxSummary.parse(data, ["INV-000001"])


def test_a_summary_must_cover_exactly_the_scope() -> None:
    with pytest.raises(ValueError, match="expected"):
        SandboxSummary.parse(GOOD, ["INV-000001", "INV-000002"])


def test_reason_codes_are_declared_once_and_sorted() -> None:
    assert rules.REASONS == get_args(rules.ReasonCode) == tuple(sorted(rules.REASONS))


@pytest.mark.parametrize(("status", "kind"), [
    (None, GatewayUnavailable), (500, GatewayUnavailable), (503, GatewayUnavailable),
    (409, GatewayBusy), (400, GatewayRejected), (402, GatewayRejected), (404, GatewayRejected),
])
def test_gateway_answers_map_once_to_narrow_types(status: int | None,
                                                  kind: type[GatewayError]) -> None:
    error = GatewayError.of("boom", code="x", status=status)
    assert type(error) is kind and (error.code, error.status) == ("x", status)
