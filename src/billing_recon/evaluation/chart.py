"""The evaluation's chart: money wrongly proposed against cost per ticket, a point per
configuration (PNG, matplotlib without a display)."""

from __future__ import annotations

import io
from typing import Any


def wrong_money_total(scores: dict[str, Any]) -> float:
    """Over- plus under-proposed money, summed over currencies (the chart's y axis; the
    report keeps currencies apart)."""
    return sum(float(amount) for amount in scores["money"]["wrong"].values())


def png(report: dict[str, Any]) -> bytes:
    """The chart as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a worker
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    try:
        for name, scores in report["configurations"].items():
            x = scores["cost"]["cost_usd"]["mean"] or 0.0
            y = wrong_money_total(scores)
            ax.scatter([x], [y], s=60)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6))
        ax.set_xlabel("mean cost per ticket (USD)")
        ax.set_ylabel("money wrongly proposed (over + under, all currencies)")
        ax.set_title(f"{report['corpus']['emails']} labelled emails")
        ax.grid(True, alpha=0.3)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()
    finally:
        plt.close(fig)
