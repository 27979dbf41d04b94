"""One evaluation: a labelled folder (or a generated corpus), several configurations, one report.

The command line (``billing-recon eval``) and the ``evaluate`` flow both call ``evaluate``;
they differ only in how they show the report (terminal tables and JSON, or Prefect artifacts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from billing_recon.errors import UserInputError
from billing_recon.evaluation import shadow
from billing_recon.evaluation.configs import Configuration
from billing_recon.evaluation.corpus import DEFAULT_SIZE, generate_corpus
from billing_recon.evaluation.labels import read_labels
from billing_recon.evaluation.metrics import gate, score
from billing_recon.evaluation.records import TicketRecord

DEFAULT_SEED = 11
#: Told when a configuration starts: its name and how many emails it will run.
Starting = Callable[[str, int], None]


def labelled_folder(given: Path | None, scratch: Path, seed: int = DEFAULT_SEED,
                    size: int = DEFAULT_SIZE) -> tuple[Path, dict[str, Any]]:
    """The folder to evaluate on and how it was made: ``given``, else a corpus generated
    under ``scratch``."""
    if given is None:
        return generate_corpus(scratch, seed=seed, size=size), {"generated": True,
                                                                "seed": seed}
    for part in ("data", "inbox"):
        if not (given / part).is_dir():
            raise UserInputError(f"{given} is not a labelled folder: it has no {part}/ "
                                 "(docs/evaluation.md)")
    return given, {"generated": False}


def _model_summary(config: Configuration) -> dict[str, Any]:
    llm = config.settings.llm
    return {"backend": llm.backend, "base_url": llm.base_url if llm.backend == "openai" else None,
            "models": llm.models if llm.backend == "openai" else {"all": "offline rules"}}


def evaluate(folder: Path, configs: list[Configuration], corpus: dict[str, Any],
             starting: Starting | None = None, progress: shadow.Progress | None = None,
             ) -> tuple[dict[str, Any], dict[str, list[TicketRecord]]]:
    """Run every configuration over the folder's labelled emails, one after another, each on
    its own scratch database; the report (per configuration: model summary, wall time and
    every metric) and the ticket records."""
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise UserInputError(f"configuration names must differ: {', '.join(names)}")
    labels = read_labels(folder)
    missing = [label.email for label in labels if not (folder / "inbox" / label.email).is_file()]
    if missing:
        raise UserInputError(f"labelled emails missing from {folder / 'inbox'}: "
                             f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    report: dict[str, Any] = {"corpus": {"folder": str(folder), "emails": len(labels),
                                         **corpus}, "configurations": {}}
    records: dict[str, list[TicketRecord]] = {}
    for config in configs:
        if starting is not None:
            starting(config.name, len(labels))
        started = time.perf_counter()
        records[config.name] = shadow.run(folder, labels, config, progress)
        report["configurations"][config.name] = {
            "model": _model_summary(config), "wall_s": round(time.perf_counter() - started, 2),
            **score(records[config.name])}
    return report, records


def failures(report: dict[str, Any], floors: dict[str, float],
             ceilings: dict[str, float]) -> list[str]:
    """Every gate each configuration fails, prefixed with its name."""
    return [f"{name}: {failure}" for name, scores in report["configurations"].items()
            for failure in gate(scores, floors, ceilings)]
