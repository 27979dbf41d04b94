"""Flow evaluate-models: shadow-mode evaluation of model configurations, as artifacts.

The same evaluation as ``billing-recon eval`` (billing_recon.evaluation.evaluate): every
configuration runs the production pipeline over labelled emails on a scratch database of its
own, stops at the approval gate and never calls a gateway. The run publishes a markdown
summary, a table per configuration and a chart of money wrongly proposed against cost per
ticket; a gate that fails fails the run. Deployed as ``evaluate`` (deployments/prefect.yaml).
Neither the flow nor this file is named plain ``evaluate``: that is a PyPI library's name,
and Prefect puts a script's folder first on sys.path.
"""

from __future__ import annotations

import base64
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import (
    acreate_image_artifact,
    acreate_markdown_artifact,
    acreate_table_artifact,
)
from prefect.logging import get_run_logger
from pydantic import Field

from billing_recon.errors import BillingReconError
from billing_recon.evaluation import chart, configs, summary
from billing_recon.evaluation.evaluate import evaluate as run_evaluation
from billing_recon.evaluation.evaluate import failures, labelled_folder
from billing_recon_tasks.runtime import host_path, in_thread

KEY = "evaluation"


class GateFailed(BillingReconError):
    """A configuration is under a floor or over a ceiling of the run's gates."""


def _key(name: str) -> str:
    """An artifact key (lowercase letters, digits and dashes) for a configuration."""
    return f"{KEY}-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "config")


def _evaluate(labelled_dir: str | None, config_specs: list[str], seed: int, size: int
              ) -> dict[str, Any]:
    chosen = [configs.parse(c) for c in config_specs] or [configs.offline()]
    with tempfile.TemporaryDirectory(prefix="billing-recon-corpus-") as scratch:
        given = Path(labelled_dir) if labelled_dir else None
        folder, corpus = labelled_folder(given, Path(scratch), seed, size)
        report, _records = run_evaluation(folder, chosen, corpus)
    return report


async def publish(report: dict[str, Any]) -> None:
    """The summary (chart embedded), a table per configuration and the chart as an image."""
    image = "data:image/png;base64," + base64.b64encode(chart.png(report)).decode()
    text = summary.markdown(report) + f"\n## Money wrongly proposed vs cost\n\n![chart]({image})\n"
    await acreate_markdown_artifact(text, key=KEY, description="Shadow-mode evaluation")
    for name, scores in report["configurations"].items():
        rows = [{"metric": k, "value": v} for k, v in summary.headline(name, scores).items()]
        rows += [{"metric": f"refund {r['reason']}", "value": f"P {r['precision']} R "
                  f"{r['recall']} F1 {r['f1']}"} for r in summary.reason_rows(scores)]
        await acreate_table_artifact(rows, key=_key(name), description=f"{name}: scores")
    await acreate_image_artifact(image, key=f"{KEY}-chart",
                                 description="Money wrongly proposed against cost per ticket")


@flow(name="evaluate-models", persist_result=False)
async def evaluate_models(
    labelled_dir: str | None = None,
    config_specs: list[str] | None = None,
    seed: Annotated[int, Field(ge=0)] = 11,
    size: Annotated[int, Field(ge=17, le=100_000)] = 520,
    fail_under: dict[str, float] | None = None,
    fail_over: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Score model configurations on labelled emails without approval or money.

    Args:
        labelled_dir: A folder with data/, inbox/ and labels.jsonl (docs/evaluation.md);
            deployed, a relative folder is taken under BILLING_RECON_INBOX_ROOT. Unset: a
            generated corpus.
        config_specs: Configurations as NAME=SETTINGS (a .env file on the worker, VAR=VALUE
            pairs joined by commas, or offline); unset: offline=offline.
        seed: Seed of the generated corpus.
        size: Emails in the generated corpus.
        fail_under: Floors, e.g. {"refund_recall": 0.95}: the run fails below one.
        fail_over: Ceilings, e.g. {"over_money.USD": 0}: the run fails above one.
    """
    report = await in_thread(_evaluate, host_path(labelled_dir), config_specs or [], seed,
                             size)
    await publish(report)
    failed = failures(report, fail_under or {}, fail_over or {})
    for name, scores in report["configurations"].items():
        get_run_logger().info("%s: outcome accuracy %s, wrong money %s", name,
                              scores["outcomes"]["accuracy"], scores["money"]["wrong"])
    if failed:
        raise GateFailed("; ".join(failed))
    return report


if __name__ == "__main__":  # python flows/evaluate_models.py: the offline model, now
    import asyncio

    from billing_recon_tasks.temporary_server import ensure_api

    ensure_api()
    print(summary.markdown(asyncio.run(evaluate_models())))
