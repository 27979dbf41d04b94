"""The gateway's fault switch, seen through the official stripe SDK on loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from billing_recon.errors import GatewayError
from billing_recon.payments.gateway_server import GatewayServer
from billing_recon.payments.refunds import RefundClient, RefundRequest
from billing_recon.testing.gateway_faults import FaultPlan

AUTH = {"Authorization": "Bearer sk_test_local"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GatewayServer]:
    """A gateway with fault injection on (no fault planned) and charge ch_1 of 50.00."""
    with GatewayServer(f"sqlite:///{tmp_path}/gw.db", api_key="sk_test_local",
                       faults=FaultPlan()) as srv:
        srv.store.ensure_charge("ch_1", 5000, "usd")
        yield srv


def _plan(server: GatewayServer, spec: str) -> None:
    httpx.post(f"{server.url}/v1/test_helpers/faults", data={"spec": spec}, headers=AUTH,
               trust_env=False).raise_for_status()


def _client(server: GatewayServer, retries: int) -> RefundClient:
    return RefundClient("sk_test_local", server.url, max_network_retries=retries, timeout_s=1)


def _request(key: str = "k1") -> RefundRequest:
    return RefundRequest("ch_1", Decimal("10.00"), "usd", key)


@pytest.mark.parametrize("fault", ["drop", "timeout"])
def test_response_lost_after_commit_made_the_refund_and_a_retry_replays_it(
        server: GatewayServer, fault: str) -> None:
    _plan(server, f"hold=1.5,script={fault}")
    with pytest.raises(GatewayError) as info:
        _client(server, retries=0).refund(_request())
    assert info.value.code == "api_connection_error"
    assert len(server.store.list_refunds("ch_1")) == 1  # committed, though never answered
    replay = _client(server, retries=0).refund(_request())
    assert [r["id"] for r in server.store.list_refunds("ch_1")] == [replay.gateway_refund_id]


@pytest.mark.parametrize("fault", ["error", "reset"])
def test_error_and_reset_make_no_refund_and_the_sdk_retry_makes_one(
        server: GatewayServer, fault: str) -> None:
    _plan(server, f"script={fault}")
    with pytest.raises(GatewayError):
        _client(server, retries=0).refund(_request("k1"))
    assert server.store.list_refunds("ch_1") == []
    _plan(server, f"script={fault}")
    _client(server, retries=2).refund(_request("k2"))  # the SDK's own retry, same key
    assert len(server.store.list_refunds("ch_1")) == 1


def test_latency_and_counts_are_reported(server: GatewayServer) -> None:
    _plan(server, "latency=0.01,drop=1,seed=3")
    with pytest.raises(GatewayError):
        _client(server, retries=1).refund(_request())
    got = httpx.get(f"{server.url}/v1/test_helpers/faults", headers=AUTH,
                    trust_env=False).json()
    assert got["injected"] == {"drop": 2} and got["latency_s"] == 0.01
    assert len(server.store.list_refunds("ch_1")) == 1  # the retry was a replay


def test_fault_switch_does_not_exist_unless_enabled(tmp_path: Path) -> None:
    with GatewayServer(f"sqlite:///{tmp_path}/gw.db", api_key="sk_test_local") as srv:
        answer = httpx.post(f"{srv.url}/v1/test_helpers/faults", data={"spec": "drop=1"},
                            headers=AUTH, trust_env=False)
    assert answer.status_code == 404


def test_fault_plan_parses_rates_script_and_refuses_unknown_faults() -> None:
    plan = FaultPlan.parse("latency=0.2,drop=0.5,hold=3,seed=1,script=ok+reset")
    assert (plan.latency_s, plan.rates, plan.hold_s) == (0.2, {"drop": 0.5}, 3.0)
    assert [plan.next_fault(), plan.next_fault()] == [None, "reset"]
    with pytest.raises(ValueError, match="unknown gateway fault"):
        FaultPlan.parse("explode=1")
