"""Plots logged with a training run (the per-epoch learning curve)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


def learning_curve(history: list[dict[str, float]], path: Path, title: str) -> bool:
    """Loss and validation metrics per epoch as a PNG; False when there is nothing to plot."""
    rows = [r for r in history if "epoch" in r]
    if len(rows) < 1:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib comes with mlflow
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [r["epoch"] for r in rows]
    if any("loss" in r for r in rows):
        ax.plot(epochs, [r.get("loss", float("nan")) for r in rows], label="train loss", color="tab:blue")
        ax.set_ylabel("loss")
    ax2 = ax.twinx()
    for key in sorted({k for r in rows for k in r if k.startswith("valid")}):
        pts = [(r["epoch"], r[key]) for r in rows if key in r]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key, color="tab:orange")
        ax2.set_ylabel("validation")
    ax.set_xlabel("epoch")
    ax.set_title(title)
    fig.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
