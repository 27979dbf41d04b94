"""The evaluate-models flow publishes the evaluation as artifacts and fails on a failed gate."""

from __future__ import annotations

import base64
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.states import State

from billing_recon_flows.evaluate_models import evaluate_models

pytestmark = [pytest.mark.flows, pytest.mark.anyio]
PNG = b"\x89PNG\r\n\x1a\n"


async def _artifacts(state: State) -> dict[str, str]:
    run_id = UUID(str(state.state_details.flow_run_id))
    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return {a.key or "": str(a.data) for a in found}


async def test_the_flow_publishes_a_summary_a_table_per_configuration_and_a_chart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    state = await evaluate_models(config_specs=["rules=offline", "again=BILLING_RECON_LLM="
                                                "offline,BILLING_RECON_LLM_ANALYSIS_RETRIES=1"],
                                  size=17, seed=5, return_state=True)
    assert state.is_completed(), state.message
    report = await state.result()
    assert set(report["configurations"]) == {"rules", "again"}
    artifacts = await _artifacts(state)
    assert set(artifacts) == {"evaluation", "evaluation-rules", "evaluation-again",
                              "evaluation-chart"}
    assert "# Shadow-mode evaluation" in artifacts["evaluation"]
    assert "| rules |" in artifacts["evaluation"]
    assert "refund price_overcharge" in artifacts["evaluation-rules"]
    image = artifacts["evaluation-chart"]
    assert image.startswith("data:image/png;base64,")
    assert base64.b64decode(image.split(",", 1)[1]).startswith(PNG)
    assert image in artifacts["evaluation"]  # embedded in the summary too


async def test_a_failed_gate_fails_the_run(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    state = await evaluate_models(size=17, seed=5, fail_under={"outcome_accuracy": 1.01},
                                  return_state=True)
    assert state.is_failed()
    assert "offline: outcome_accuracy" in str(state.message) + repr(await state.result(
        raise_on_failure=False))
    assert "evaluation" in await _artifacts(state)  # published before the gate
