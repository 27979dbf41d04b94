"""The report as text: headline rows per configuration, and a markdown summary.

The terminal tables (the CLI) and the Prefect artifacts (the ``evaluate`` flow) show the same
numbers, taken from here.
"""

from __future__ import annotations

from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _money(amounts: dict[str, str]) -> str:
    shown = [f"{amount} {currency}" for currency, amount in amounts.items()]
    return ", ".join(shown) or "0"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def headline(name: str, scores: dict[str, Any]) -> dict[str, str]:
    """One configuration's headline numbers, formatted."""
    cost = scores["cost"]
    return {
        "configuration": name,
        "tickets": str(scores["tickets"]),
        "outcome accuracy": _pct(scores["outcomes"]["accuracy"]),
        "billing intent": _pct(scores["triage"]["billing_accuracy"]),
        "invoice ids exact": _pct(scores["triage"]["ids_exact"]),
        "refund precision": _pct(scores["refunds"]["any"]["precision"]),
        "refund recall": _pct(scores["refunds"]["any"]["recall"]),
        "over-proposed": _money(scores["money"]["over"]),
        "under-proposed": _money(scores["money"]["under"]),
        "escalated": _pct(scores["escalations"]["rate"]),
        "calls/ticket (mean, p95, max)": " / ".join(_num(cost["calls"][k], 1)
                                                    for k in ("mean", "p95", "max")),
        "tokens/ticket (mean, p95, max)": " / ".join(_num(cost["tokens"][k], 0)
                                                     for k in ("mean", "p95", "max")),
        "USD/ticket (mean, p95, max)": " / ".join(_num(cost["cost_usd"][k], 5)
                                                  for k in ("mean", "p95", "max")),
        "wall s": _num(scores.get("wall_s"), 1),
    }


def reason_rows(scores: dict[str, Any]) -> list[dict[str, str]]:
    """Refund precision, recall and F1 per reason code."""
    return [{"reason": code, "tp": str(s["tp"]), "fp": str(s["fp"]), "fn": str(s["fn"]),
             "precision": _pct(s["precision"]), "recall": _pct(s["recall"]),
             "f1": _pct(s["f1"])} for code, s in scores["refunds"].items()]


def outcome_rows(scores: dict[str, Any]) -> list[dict[str, str]]:
    """Outcome accuracy per expected state and reason."""
    return [{"expected": name, "total": str(s["total"]), "correct": str(s["correct"]),
             "accuracy": _pct(s["accuracy"])}
            for name, s in scores["outcomes"]["by_expected"].items()]


def step_rows(scores: dict[str, Any]) -> list[dict[str, str]]:
    """Wall time per step."""
    return [{"step": step, "runs": str(s["runs"]), "mean s": _num(s["mean"], 3),
             "p95 s": _num(s["p95"], 3), "max s": _num(s["max"], 3),
             "total s": _num(s["total"], 1)} for step, s in scores["steps"].items()]


def variety_rows(scores: dict[str, Any]) -> list[dict[str, str]]:
    """Outcome accuracy by how the email was written."""
    return [{"written as": f"{field}={value}", "total": str(s["total"]),
             "accuracy": _pct(s["accuracy"])}
            for field, groups in scores["by_variety"].items() for value, s in groups.items()]


def _md_table(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return ["(none)"]
    heads = list(rows[0])
    return ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads),
            *("| " + " | ".join(row[h] for h in heads) + " |" for row in rows)]


def markdown(report: dict[str, Any]) -> str:
    """The whole report as a markdown document (the flow's summary artifact)."""
    corpus = report["corpus"]
    made = f"generated, seed {corpus['seed']}" if corpus.get("generated") else corpus["folder"]
    lines = ["# Shadow-mode evaluation", "",
             f"{corpus['emails']} labelled emails ({made}); no approval, no gateway call: "
             "refunds are what each configuration WOULD have proposed.", "",
             *_md_table([headline(n, s) for n, s in report["configurations"].items()])]
    for name, scores in report["configurations"].items():
        errors = scores["outcomes"]["errors"]
        lines += ["", f"## {name}", "", "### Refunds per reason code", "",
                  *_md_table(reason_rows(scores)), "", "### Outcomes per expected state", "",
                  *_md_table(outcome_rows(scores)), "", "### Wrong outcomes", "",
                  *(f"- {k}: {v}" for k, v in errors.items()), *([] if errors else ["none"]),
                  "", "### Wall time per step", "", *_md_table(step_rows(scores))]
    return "\n".join(lines) + "\n"
