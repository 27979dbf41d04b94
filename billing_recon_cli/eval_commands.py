"""``billing-recon eval``: shadow-mode evaluation of model configurations on labelled emails."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from billing_recon.errors import UserInputError
from billing_recon.evaluation import configs, summary
from billing_recon.evaluation.evaluate import evaluate, failures, labelled_folder
from billing_recon.evaluation.metrics import METRIC_NAMES, unknown_metrics
from billing_recon.progress import ProgressBar


def add_parser(sub: Any) -> None:
    """The ``eval`` subcommand's arguments."""
    ev = sub.add_parser("eval", help="shadow-mode evaluation: run model configurations over "
                        "labelled emails (no approval, no gateway) and score them")
    ev.add_argument("labelled_dir", nargs="?", metavar="LABELLED_DIR",
                    help="data/, inbox/ and labels.jsonl (docs/evaluation.md); default: a "
                    "generated corpus of about 520 emails")
    ev.add_argument("--config", action="append", default=[], metavar="NAME=SETTINGS",
                    help="a configuration to measure (repeatable): SETTINGS is a .env file, "
                    "VAR=VALUE pairs joined by commas, or offline (default: offline=offline)")
    ev.add_argument("--json", action="store_true", help="print the report as one JSON document")
    ev.add_argument("--fail-under", action="append", default=[], metavar="METRIC=VALUE",
                    help="exit 1 when a configuration's METRIC is below VALUE (e.g. "
                    "refund_recall=0.95)")
    ev.add_argument("--fail-over", action="append", default=[], metavar="METRIC=VALUE",
                    help="exit 1 when a configuration's METRIC is above VALUE (e.g. "
                    "over_money.USD=0)")
    ev.add_argument("--seed", type=int, default=11, help="seed of the generated corpus")
    ev.add_argument("--size", type=int, default=520, help="emails of the generated corpus")
    ev.add_argument("--corpus-out", default=None, metavar="DIR",
                    help="keep the generated corpus in DIR (default: a temporary folder)")
    ev.add_argument("--records", default=None, metavar="PATH",
                    help="also write every ticket record as JSON lines to PATH")


def _thresholds(items: list[str], flag: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise UserInputError(f"{flag} {item!r}: expected METRIC=NUMBER")
    return out


def _check_names(thresholds: dict[str, float]) -> None:
    unknown = unknown_metrics(thresholds)
    if unknown:
        raise UserInputError(f"unknown metric {', '.join(unknown)}; metrics: "
                             f"{', '.join(sorted(METRIC_NAMES))} and over_money.CUR, "
                             "under_money.CUR, wrong_money.CUR")


def _print_tables(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()

    def show(title: str, rows: list[dict[str, str]]) -> None:
        if not rows:
            return
        table = Table(title=title, title_justify="left")
        for head in rows[0]:
            table.add_column(head, overflow="fold")
        for row in rows:
            table.add_row(*row.values())
        console.print(table)

    corpus = report["corpus"]
    console.print(f"[bold]Shadow-mode evaluation[/bold]: {corpus['emails']} labelled emails "
                  f"in {corpus['folder']}; no approval, no gateway call.")
    heads = [summary.headline(n, s) for n, s in report["configurations"].items()]
    show("Configurations", [{"metric": k, **{h["configuration"]: h[k] for h in heads}}
                            for k in heads[0] if k != "configuration"])
    for name, scores in report["configurations"].items():
        show(f"{name}: refunds per reason code", summary.reason_rows(scores))
        show(f"{name}: outcomes per expected state and reason", summary.outcome_rows(scores))
        show(f"{name}: escalations per reason", [
            {"reason": r, "count": str(s["count"]), "rate": f"{100 * (s['rate'] or 0):.1f}%"}
            for r, s in scores["escalations"]["by_reason"].items()])
        show(f"{name}: accuracy by how the email is written", summary.variety_rows(scores))
        show(f"{name}: wall time per step", summary.step_rows(scores))


def evaluate_cmd(args: argparse.Namespace) -> int:
    """Run the configurations, print the report, apply the gates."""
    floors = _thresholds(args.fail_under, "--fail-under")
    ceilings = _thresholds(args.fail_over, "--fail-over")
    _check_names({**floors, **ceilings})
    chosen = [configs.parse(c) for c in args.config] or [configs.offline()]
    with tempfile.TemporaryDirectory(prefix="billing-recon-corpus-") as scratch:
        out = Path(args.corpus_out) if args.corpus_out else Path(scratch)
        given = Path(args.labelled_dir) if args.labelled_dir else None
        folder, corpus = labelled_folder(given, out, args.seed, args.size)
        bars: dict[str, ProgressBar] = {}

        def starting(name: str, total: int) -> None:
            print(f"{name}: {total} emails in shadow mode...", file=sys.stderr, flush=True)
            bars[name] = ProgressBar(total, f"tickets ({name})")

        def progress(name: str, done: int) -> None:
            bars[name].update(done)
            if done == bars[name].total:
                bars[name].close()

        report, records = evaluate(folder, chosen, corpus, starting, progress)
        if args.corpus_out is None and corpus["generated"]:
            report["corpus"]["folder"] = "(temporary; --corpus-out DIR keeps it)"
    if args.records:
        with open(args.records, "w", encoding="utf-8") as handle:
            for name, rows in records.items():
                for record in rows:
                    handle.write(json.dumps({"configuration": name, **record.as_dict()},
                                            sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(report, sort_keys=True, indent=2), flush=True)
    else:
        _print_tables(report)
    failed = failures(report, floors, ceilings)
    for failure in failed:
        print(f"billing-recon eval: gate failed: {failure}", file=sys.stderr)
    return 1 if failed else 0
