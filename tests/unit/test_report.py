"""The ablation run and the report on tiny planted data: content must beat its random control,
and the report must render every block (tables, ratios, ablation sentences, figures)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.ablation import run_ablation
from mmrec.config import Params
from mmrec.data.interactions import Interactions, SplitData
from mmrec.encoders.store import write_features
from mmrec.paths import DatasetPaths
from mmrec.report import ABLATION, FIGURES, LEARNING_CURVES, render_markdown, write_report

GROUPS, PER_GROUP, COLD, USERS = 3, 12, 4, 10  # per group: 8 warm + 4 cold items, 10 users


def planted(seed: int = 0) -> tuple[SplitData, dict[str, np.ndarray]]:
    """Users stay inside one taste group; the text vector names the group, the image is noise."""
    rng = np.random.default_rng(seed)
    n_items, n_users = GROUPS * PER_GROUP, GROUPS * USERS
    group = np.repeat(np.arange(GROUPS), PER_GROUP)
    text = (np.eye(GROUPS)[group] * 3 + 0.3 * rng.normal(size=(n_items, GROUPS))).astype(np.float32)
    image = rng.normal(size=(n_items, 5)).astype(np.float32)
    parts = {p: np.zeros((n_users, n_items), np.float32) for p in ("train", "valid", "test", "cold")}
    for u in range(n_users):
        g = u // USERS
        warm = g * PER_GROUP + rng.permutation(PER_GROUP - COLD)
        parts["train"][u, warm[:5]] = 1
        parts["valid"][u, warm[5]] = 1
        parts["test"][u, warm[6:8]] = 1
        parts["cold"][u, g * PER_GROUP + PER_GROUP - COLD + rng.choice(COLD, 2, replace=False)] = 1
    ids = lambda n: np.arange(n).astype(str).astype(object)
    cold_items = np.concatenate([g * PER_GROUP + np.arange(PER_GROUP - COLD, PER_GROUP) for g in range(GROUPS)])
    data = SplitData(
        train=Interactions(sp.csr_matrix(parts["train"]), ids(n_users), ids(n_items)),
        valid=sp.csr_matrix(parts["valid"]),
        test=sp.csr_matrix(parts["test"]),
        cold_test=sp.csr_matrix(parts["cold"]),
        cold_items=cold_items,
        split_hash="0" * 64,
    )
    return data, {"text": text, "image": image}


def params(**ablation) -> Params:
    return Params.model_validate(
        {
            "extract": {"text": {"encoder": "tiny_text"}, "image": {"encoder": "tiny_cnn"}},
            "evaluate": {"bootstrap_resamples": 200, "ks": [2, 5], "ablation": {"model": "content_knn", **ablation}},
        }
    )


@pytest.fixture(scope="module")
def ablation(tmp_path_factory) -> dict:
    data, feats = planted()
    paths = DatasetPaths("toy", tmp_path_factory.mktemp("ablation"))
    write_features(paths.features("text", "tiny_text"), list(data.item_ids), feats["text"], {"dim": 3})
    write_features(paths.features("image", "tiny_cnn"), list(data.item_ids[:-2]), feats["image"][:-2], {"dim": 5})
    history = sp.csr_matrix(data.train.matrix + data.valid)
    return run_ablation(params(), paths, data, history)


def test_ablation_credits_content_and_not_noise(ablation: dict):
    assert list(ablation["variants"]) == ["text", "image", "all", "random_text", "random_image", "random"]
    v = ablation["variants"]
    assert v["random_text"]["random"] == ["text"] and v["all"]["modalities"] == ["text", "image"]
    verdicts = {(d["variant"], d["part"]): d for d in ablation["verdicts"]}
    # text names the taste group: on the cold slice it must beat its random control clearly
    assert verdicts[("text", "cold")]["verdict"] == "adds", verdicts[("text", "cold")]["sentence"]
    assert ablation["metric"] == "recall@5"
    assert v["text"]["cold"]["recall@5"] > v["random_text"]["cold"]["recall@5"]
    # the image vectors are pure noise: they may not be credited as content
    assert verdicts[("image", "cold")]["verdict"] != "adds", verdicts[("image", "cold")]["sentence"]
    assert all(d["sentence"] for d in ablation["verdicts"])


def test_ablation_skips_with_a_reason_when_features_are_missing(tmp_path):
    data, _ = planted()
    out = run_ablation(params(), DatasetPaths("toy", tmp_path), data, data.train.matrix)
    assert out["variants"] == {} and "extract_" in out["skipped"]


def fake_report(ablation: dict | None) -> dict:
    def block(r: float) -> dict:
        return {
            "recall@20": r,
            "ndcg@20": r / 2,
            "precision@20": r / 10,
            "hit@20": min(1.0, 2 * r),
            "recall@5": r / 2,
            "ndcg@5": r / 3,
            "precision@5": r / 5,
            "hit@5": r,
            "coverage@20": 0.5,
            "users": 30,
        }

    def model(r: float, epochs: int, modalities: list | None = None) -> dict:
        hist = [
            {"epoch": e, "loss": 1 / e, "seconds": 0.1, **({"valid_recall@20": r * e / epochs} if e % 2 == 0 else {})}
            for e in range(1, epochs + 1)
        ]
        return {
            "valid": block(r),
            "test": block(r),
            "sparse": {**block(r), "max_train_interactions": 20},
            "cold": block(r),
            "cold_random_lift": {"recall@20": r / 0.08},
            "cold_personalisation": {"mean_spearman": 0.2},
            "train_seconds": 1.0,
            "seconds_per_epoch": 0.1,
            "epochs": epochs,
            "history": hist,
            "params": {"modalities": modalities} if modalities else {},
        }

    ci = {"recall@20": {"ratio": 1.1, "low": 1.02, "high": 1.2}, "ndcg@20": {"ratio": 0.98, "low": 0.9, "high": 1.05}}
    report = {
        "dataset": "toy",
        "split": {"kind": "temporal", "hash": "a" * 64},
        "counts": {"users": 30, "items": 36},
        "selection_metric": "recall@20",
        "best_model": "mm",
        "models": {"lightgcn": model(0.3, 6), "mm": model(0.33, 8, ["text"])},
        "random": {"cold": {"expected": block(0.1), "measured": block(0.09)}, "test": {"measured": block(0.01)}},
        "comparisons": {
            "reference": "lightgcn",
            "confidence": 0.95,
            "resamples": 200,
            "seed": 1,
            "test": {"mm": ci},
            "sparse": {"mm": ci},
            "cold": {"mm": ci},
        },
    }
    from mmrec.analysis import quality_targets

    report["targets"] = quality_targets(report, 3.5)
    if ablation is not None:
        report["ablation"] = ablation
    return report


def test_report_renders_tables_ratios_ablation_and_figures(tmp_path, ablation: dict):
    report = fake_report(ablation)
    path = write_report(report, tmp_path)
    md = path.read_text()
    for needle in (
        "## Warm test",
        "## Sparse users (≤ 20 training interactions)",
        "## Cold slice",
        "## Against lightgcn",
        "×1.100 [1.020, 1.200] (better)",
        "×0.980 [0.900, 1.050] (not distinguishable)",
        "*random (expected)*",
        "## Quality targets",
        "**mm**",
        "≥ ×3.5: **met**",
        "## Per-modality ablation: content_knn",
        "over the random control `random_text`",
        f"]({FIGURES}/{ABLATION})",
        f"]({FIGURES}/{LEARNING_CURVES})",
    ):
        assert needle in md, needle
    assert md.count("| lightgcn |") == 3  # one row per part
    assert "(cap)" not in md
    capped = {**ablation, "params": {"max_epochs": 1}}  # content_knn "trains" one epoch: at the cap
    assert "| 1 (cap) |" in render_markdown(fake_report(capped)) and "may be under-trained" in render_markdown(
        fake_report(capped)
    )
    for name in (ABLATION, LEARNING_CURVES):
        png = (tmp_path / FIGURES / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(png) < 200_000


def test_report_without_curves_cold_or_ablation_says_so(tmp_path):
    report = fake_report(None)
    for entry in report["models"].values():
        entry["history"] = []
        del entry["cold"]
    report["comparisons"] = {"reference": "lightgcn", "skipped": "reference model 'lightgcn' is not among the models"}
    (tmp_path / FIGURES).mkdir()
    (tmp_path / FIGURES / ABLATION).write_bytes(b"stale")
    md = write_report(report, tmp_path).read_text()
    assert "No epoch-trained model" in md and "## Cold slice" not in md and "Not computed: reference" in md
    assert not (tmp_path / FIGURES / ABLATION).exists()  # figures are replaced whole: nothing stale survives
    assert render_markdown(report) == md
