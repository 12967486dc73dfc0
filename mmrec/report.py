"""The readable evaluation report: `reports/<name>/report.md` and its figures, from metrics.json.

Everything is rendered from the metrics.json dict alone (no model, no data), so the report of
any past run can be regenerated from its committed metrics file, and what the report says is
exactly what the metrics file holds. Figures are PNGs drawn with matplotlib's Agg canvas
(no display, no global pyplot state) into `reports/<name>/figures/`, small enough to commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmrec.analysis import CURVE_METRIC, learning_curve
from mmrec.io import atomic_dir, write_text

FIGURES = "figures"
LEARNING_CURVES = "learning_curves.png"
ABLATION = "ablation.png"
PARTS = {"test": "Warm test", "sparse": "Sparse users", "cold": "Cold slice"}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ks(report: dict[str, Any]) -> list[int]:
    keys = {key for e in report["models"].values() for part in ("test", "valid") for key in e.get(part, {})}
    return sorted({int(k.split("@")[1]) for k in keys if k.startswith("recall@")})


def _metric_cols(ks: Sequence[int]) -> list[str]:
    cols = [f"{m}@{k}" for m in ("recall", "ndcg", "precision", "hit") for k in ks]
    return cols + [f"coverage@{max(ks)}"]


def _label(col: str) -> str:
    name, k = col.split("@")
    short = {"recall": "R", "ndcg": "N", "precision": "P", "hit": "Hit", "coverage": "Cov"}[name]
    return f"{short}@{k}"


def _table(report: dict[str, Any], part: str, ks: Sequence[int]) -> list[str]:
    cols = _metric_cols(ks)
    extra = [f"×random R@{20 if 20 in ks else max(ks)}", "rank ρ"] if part == "cold" else []
    head = ["model", *map(_label, cols), "users", *extra, "train s", "s/epoch", "epochs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    entries = [e[part] for e in report["models"].values() if part in e]
    best = {c: max((e.get(c, float("-inf")) for e in entries), default=None) for c in cols}
    for name, e in report["models"].items():
        if part not in e:
            continue
        cells = []
        for c in cols:
            v = e[part].get(c)
            cell = _fmt(v)
            cells.append(f"**{cell}**" if v is not None and v == best[c] and len(report["models"]) > 1 else cell)
        cells.append(_fmt(e[part].get("users")))
        if part == "cold":
            k = 20 if 20 in ks else max(ks)
            lift = e.get("cold_random_lift", {}).get(f"recall@{k}")
            pers = e.get("cold_personalisation", {})
            rho = _fmt(pers.get("mean_spearman"), 3)
            if pers.get("constant_share"):
                rho += " †"
            cells += [_fmt(lift, 2), rho]
        cells += [_fmt(e.get("train_seconds"), 1), _fmt(e.get("seconds_per_epoch"), 3), _fmt(e.get("epochs"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    rnd = report.get("random", {}).get(part, {})
    k = 20 if 20 in ks else max(ks)
    expected_recall = rnd.get("expected", {}).get(f"recall@{k}")
    for label, block in (("random (expected)", rnd.get("expected")), ("random (seeded)", rnd.get("measured"))):
        if block:
            cells = [_fmt(block.get(c)) for c in cols] + [_fmt(block.get("users"))]
            if part == "cold":
                r = block.get(f"recall@{k}")
                cells += [_fmt(r / expected_recall if r is not None and expected_recall else None, 2), "–"]
            lines.append(f"| *{label}* | " + " | ".join(cells) + " | – | – | – |")
    return lines


def _ratio_text(r: dict[str, Any]) -> str:
    if r.get("ratio") is None:
        return "no ratio (reference scores 0)"
    mark = "better" if r["low"] > 1 else "worse" if r["high"] < 1 else "not distinguishable"
    return f"×{r['ratio']:.3f} [{r['low']:.3f}, {r['high']:.3f}] ({mark})"


def _comparisons(report: dict[str, Any]) -> list[str]:
    comp = report.get("comparisons")
    if not comp:
        return []
    ref = comp["reference"]
    out = [f"## Against {ref}", ""]
    if comp.get("skipped"):
        return out + [f"Not computed: {comp['skipped']}.", ""]
    out += [
        f"Ratio of means (model / {ref}) with a paired bootstrap {int(comp['confidence'] * 100)}% CI over users "
        f"({comp['resamples']} resamples, seed {comp['seed']}); 'better' means the whole interval is above 1.",
        "",
    ]
    for name in report["models"]:
        if name == ref:
            continue
        parts = []
        for part in ("test", "sparse", "cold"):
            block = comp.get(part, {}).get(name)
            if block:
                metrics = ", ".join(f"{m} {_ratio_text(r)}" for m, r in block.items())
                parts.append(f"{PARTS[part].lower()}: {metrics}")
        if parts:
            out.append(f"- **{name}** — " + "; ".join(parts))
    return out + [""]


def _targets(report: dict[str, Any]) -> list[str]:
    t = report.get("targets")
    if not t:
        return []
    out = ["## Quality targets", ""]
    if t.get("skipped"):
        return out + [f"Not checked: {t['skipped']}.", ""]
    ref, best = t["reference"], t["best_multimodal"]
    yes = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    if "warm" in t:
        ratios = ", ".join(f"{m} ×{_fmt(r, 3)}" for m, r in t["warm"]["ratios"].items())
        out.append(
            f"- Warm test, best multimodal model **{best}** (by validation) vs {ref}: {ratios}; "
            f"must not lose (no CI wholly below 1): {yes(t['warm']['not_worse'])}; "
            f"beats it (every CI above 1): {yes(t['warm']['better'])}."
        )
    if "sparse" in t:
        sp_ = t["sparse"]
        out.append(
            f"- Sparse users: {best} vs {ref} {sp_['metric']} ×{_fmt(sp_['ratio'], 3)}; "
            f"beats it clearly (CI above 1): {yes(sp_['better'])}."
        )
    if "cold" in t:
        c = t["cold"]
        lifts = ", ".join(f"{n} ×{v:.2f}" for n, v in c["lifts"].items())
        out.append(
            f"- Cold slice Recall@20 over random ranking ({lifts}); ≥ ×{c['target']:g}: {yes(c['met'])} (best: {c['best']})."
        )
    if t.get("seconds_per_epoch") is not None:
        out.append(f"- Training speed of {best}: {t['seconds_per_epoch']:.3f} s/epoch.")
    return out + [""]


def _ablation(report: dict[str, Any], figure: bool) -> list[str]:
    ab = report.get("ablation")
    if not ab:
        return []
    if ab.get("skipped"):
        return [f"## Per-modality ablation: {ab['model']}", "", f"Skipped: {ab['skipped']}.", ""]
    k = ab.get("metric", "recall@20").split("@")[1]
    cap = (ab.get("params") or {}).get("max_epochs")
    capped = lambda v: " (cap)" if cap is not None and v.get("epochs") == cap else ""  # noqa: E731
    out = [
        f"## Per-modality ablation: {ab['model']}",
        "",
        "Each variant is the same model trained on the listed modalities; `random` ones have those vectors "
        "replaced by seeded Gaussian vectors of the same dimension and missing pattern (the capacity control).",
        "",
        f"| variant | modalities | random control | test R@{k} | test N@{k} | cold R@{k} | cold N@{k} "
        "| s/epoch | epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in ab["variants"].items():
        cold = v.get("cold", {})
        out.append(
            f"| {name} | {', '.join(v['modalities'])} | {', '.join(v['random']) or '–'} | "
            f"{_fmt(v['test'].get(f'recall@{k}'))} | {_fmt(v['test'].get(f'ndcg@{k}'))} | "
            f"{_fmt(cold.get(f'recall@{k}'))} | {_fmt(cold.get(f'ndcg@{k}'))} | "
            f"{_fmt(v.get('seconds_per_epoch'), 3)} | {_fmt(v.get('epochs'))}{capped(v)} |"
        )
    out.append("")
    if any(capped(v) for v in ab["variants"].values()):
        out += [f"(cap): stopped at max_epochs={cap} before early stopping; the variant may be under-trained.", ""]
    out += [f"- {v['sentence']}" for v in ab.get("verdicts", [])]
    if ab.get("note"):
        out.append(f"- Note: {ab['note']}.")
    out.append("")
    if figure:
        out += [f"![ablation]({FIGURES}/{ABLATION})", ""]
    return out


def _cold_null(report: dict[str, Any]) -> list[str]:
    """Tie handling and the permutation null of the cold slice (mmrec/cold.py)."""
    out: list[str] = []
    models = report["models"]
    unscored = [n for n, e in models.items() if e.get("cold", {}).get("unscored")]
    partly = [
        f"{n} ({e['cold']['tied_users']:.0%} of users)"
        for n, e in models.items()
        if 0 < e.get("cold", {}).get("tied_users", 0) < 1
    ]
    if unscored:
        out += [
            f"Unscored: {', '.join(unscored)} give every cold item the same score (they cannot score unseen "
            "items); their cold figures are the exact random expectation, not a tie-break's pick.",
            "",
        ]
    if partly:
        out += [f"Tied for some users (reported at the random expectation for those users): {', '.join(partly)}.", ""]
    null = report.get("random", {}).get("cold", {}).get("permutation_null") or {}
    if null.get("metrics"):
        cols = list(null["metrics"])
        out += [
            f"Permutation null: {null['permutations']} random global orders of the {null['candidates']} cold items "
            f"(one order shared by the {null['users']} users, as a popularity-like ranking): "
            + "; ".join(
                f"{_label(m)} {v['mean']:.4f} ± {v['std']:.4f} (95th pct {v['q95']:.4f})"
                for m, v in null["metrics"].items()
            )
            + ". p: share of those orders scoring at least the model (one-sided).",
            "",
            "| model | " + " | ".join(f"{_label(m)} | p" for m in cols) + " |",
            "|---|" + "---|---|" * len(cols),
        ]
        for n, e in models.items():
            c = e.get("cold", {})
            if not c:
                continue
            pv = c.get("p_value", {})
            out.append(
                f"| {n}{' (unscored)' if c.get('unscored') else ''} | "  # unscored: no p (random by construction)
                + " | ".join(f"{_fmt(c.get(m))} | {_fmt(pv.get(m), 3)}" for m in cols)
                + " |"
            )
        out.append("")
    ceiling = report.get("random", {}).get("cold", {}).get("ceilings") or {}
    if ceiling.get("global"):
        expected = report.get("random", {}).get("cold", {}).get("expected") or {}

        def lift(m: str, v: float) -> str:
            return f" ({v / expected[m]:.2f}x random)" if expected.get(m) else ""

        out += [
            f"Ceilings of this slice ({ceiling['users']} users, {ceiling['candidates']} items): the best single "
            "global order (a perfect popularity ranking) scores "
            + "; ".join(f"{_label(m)} {v:.4f}{lift(m, v)}" for m, v in ceiling["global"].items())
            + ", a perfect personal ranking "
            + "; ".join(f"{_label(m)} {v:.4f}{lift(m, v)}" for m, v in ceiling["personal"].items())
            + ". A model above the first is personalising.",
            "",
        ]
    return out


def _runs_and_flags(report: dict[str, Any]) -> list[str]:
    """Which run produced which rows (after partial `--models` runs) and possibly truncated training."""
    out: list[str] = []
    runs = report.get("runs") or []
    if len(runs) > 1:
        out += [
            "## Runs",
            "",
            "Rows come from several evaluation runs on the same split:",
            "",
            "| run | at | models | parameter files |",
            "|---|---|---|---|",
        ]
        for r in runs:
            rows = [n for n, e in report["models"].items() if (e.get("run") or {}).get("id") == r["id"]]
            files = ", ".join(
                f"`{Path(f).name}`" if Path(f).name != "params.yaml" else f"`{f}`" for f in r.get("params_files", [])
            )
            out.append(f"| `{r['id']}` | {r.get('at') or '?'} | {', '.join(rows)} | {files or '-'} |")
        out.append("")
    if report.get("dropped"):
        out += ["Rows dropped (another split): " + "; ".join(f"{k}: {v}" for k, v in report["dropped"].items()), ""]
    flags = {n: e["stopping_flag"] for n, e in report["models"].items() if e.get("stopping_flag")}
    if flags:
        out += ["## Training possibly cut short", ""] + [f"- **{n}**: {f}" for n, f in flags.items()] + [""]
    return out


def render_markdown(report: dict[str, Any], figures: Sequence[str] = ()) -> str:
    """The report as markdown; `figures` names the PNGs written beside it (linked when present)."""
    ks = _ks(report)
    split = report["split"]
    out = [f"# Evaluation report: {report['dataset']}", ""]
    counts = report.get("counts", {})
    desc = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items())
    out += [
        f"Split `{split['kind']}` (hash `{split['hash'][:12]}`){': ' + desc if desc else ''}. "
        "Full ranking over all items, "
        "training items masked (training + validation for test); the cold slice ranks only the cold items "
        "(never seen in training). Hyper-parameters and the best model are chosen on validation only.",
        "",
        f"Best model on validation `{report['selection_metric']}`: **{report['best_model']}**.",
        "",
    ]
    out += _runs_and_flags(report)
    sparse_n = next(
        (e["sparse"].get("max_train_interactions") for e in report["models"].values() if "sparse" in e), "?"
    )
    titles = {
        "test": "Warm test",
        "sparse": f"Sparse users (≤ {sparse_n} training interactions), test",
        "cold": "Cold slice (candidates = cold items)",
    }
    for part, title in titles.items():
        if not any(part in e for e in report["models"].values()):
            continue
        out += [f"## {title}", "", *_table(report, part, ks), ""]
        if part == "cold":
            out += [
                "×random: Recall@20 over the exact expectation of uniformly random ranking of the cold candidates "
                "(K / number of cold items). rank ρ: mean Spearman correlation of two users' cold-item scores over "
                "sampled user pairs (1 = everyone gets the same ranking; ~0 = personal).",
                "",
            ]
            out += _cold_null(report)
    out += _comparisons(report)
    out += _targets(report)
    out += _ablation(report, ABLATION in figures)
    if LEARNING_CURVES in figures:
        out += [
            "## Learning curves",
            "",
            "Validation Recall@20 per evaluated epoch (early stopping restores the best epoch).",
            "",
            f"![learning curves]({FIGURES}/{LEARNING_CURVES})",
            "",
        ]
    else:
        out += ["## Learning curves", "", "No epoch-trained model in this run (closed-form models only).", ""]
    return "\n".join(out)


def _canvas(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_learning_curves(report: dict[str, Any], path: Path) -> bool:
    """Validation Recall@20 per epoch per model; False (nothing written) without any curve."""
    curves = {name: learning_curve(e.get("history", []), CURVE_METRIC) for name, e in report["models"].items()}
    curves = {n: c for n, c in curves.items() if c}
    if not curves:
        return False
    fig = _canvas(7, 4)
    ax = fig.add_subplot()
    for name, points in curves.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation Recall@20")
    ax.set_title(f"Learning curves — {report['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    return True


def plot_ablation(report: dict[str, Any], path: Path) -> bool:
    """Grouped bars of the ablation variants, warm test and cold slice; False without an ablation."""
    ab = report.get("ablation")
    if not ab or not ab.get("variants"):
        return False
    metric = ab.get("metric", "recall@20")
    names = list(ab["variants"])
    parts = [p for p in ("test", "cold") if all(p in v for v in ab["variants"].values())]
    fig = _canvas(max(5.0, 1.1 * len(names) + 2), 4)
    axes = [fig.add_subplot(1, len(parts), i + 1) for i in range(len(parts))]
    for ax, part in zip(axes, parts, strict=True):
        values = [ab["variants"][n][part].get(metric, 0.0) for n in names]
        colours = ["#bbbbbb" if ab["variants"][n]["random"] else "#4c72b0" for n in names]
        ax.bar(range(len(names)), values, color=colours)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{PARTS[part]} {metric}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        rnd = report.get("random", {}).get(part, {}).get("expected", {}).get(metric)
        if part == "cold" and rnd:
            ax.axhline(rnd, color="#c44e52", linestyle="--", linewidth=1, label="random ranking")
            ax.legend(fontsize=7)
    fig.suptitle(f"Ablation of {ab['model']} (grey: random-vector controls)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    return True


def write_report(report: dict[str, Any], folder: str | Path) -> Path:
    """Write `report.md` and `figures/*.png` into `folder` (figures replaced whole); returns report.md."""
    folder = Path(folder)
    written: list[str] = []
    with atomic_dir(folder / FIGURES) as tmp:
        if plot_learning_curves(report, tmp / LEARNING_CURVES):
            written.append(LEARNING_CURVES)
        if plot_ablation(report, tmp / ABLATION):
            written.append(ABLATION)
    path = folder / "report.md"
    write_text(path, render_markdown(report, written))
    return path
