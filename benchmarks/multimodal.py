"""Multimodal models on ml100k-mm: warm test and the cold-item slice against LightGCN and random.

Protocol: every rating is an interaction; the newest 10% of items (by first interaction) are
held out of training entirely (`cold_item_fraction=0.1`) and their interactions form the cold
slice; the rest is split per user by time 80/10/10 (as `benchmarks/baselines.py`). Warm test is
ranked over all items with train + valid masked; the cold slice is ranked over the cold items
only (`candidates`), where random ranking expects Recall@K ~= K / n_cold (also measured with a
seeded random scorer). Hyper-parameters are the models' defaults; test is evaluated once.

Features come from the real extract stage (`mmrec.extract.extract_modality`, the configured
default encoders: MiniLM for text, EfficientNet-Lite0 for posters) in a workspace under /tmp;
the first run ingests, validates and encodes (~2-4 min on 2 cores), later runs reuse the files.

    .venv/bin/python benchmarks/multimodal.py [--workspace /tmp/mmrec-mm-bench] [--models a,b]
        [--threads 2] [--out results.json]
    .venv/bin/python benchmarks/multimodal.py --metrics reports/ml100k-mm/metrics.json
        # a report of `mmrec evaluate` (e.g. after `mmrec tune`) next to the peers' reference figures
        # (the file of benchmarks/reference/ measured on the report's split), compared only where
        # the split hashes match

Also reported: how personalised the cold rankings are (mean Spearman correlation between the
cold-item score vectors of 200 sampled user pairs; 1 = the same ranking for everyone). The
analyses come from `mmrec.analysis`, the same code behind `mmrec evaluate`'s report.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from baselines import DEFAULT_DATA, load_ml100k

from mmrec.analysis import expected_random, random_score_fn, rank_personalisation
from mmrec.config import SplitParams
from mmrec.data.interactions import SplitData, split_data_from_frames
from mmrec.data.splits import split_hash, split_interactions
from mmrec.encoders.config import ExtractParams
from mmrec.evaluate import evaluate_scores, user_metrics
from mmrec.io import write_json
from mmrec.models import create_model
from mmrec.models.item_features import feature_path, load_item_features, with_features
from mmrec.paths import DatasetPaths

KS = (10, 20)
MODALITIES = ("text", "image")
DEFAULT_MODELS = ("lightgcn", "content_knn", "vbpr", "two_tower", "mm_graph")
DATASET = "ml100k-mm"
#: the peers' figures on ml100k-mm with their split hash and provenance (issue 11)
REFERENCE = REPO / "benchmarks" / "reference" / "ml100k-mm.yaml"
log = logging.getLogger("benchmarks.multimodal")


def ensure_features(workspace: Path, data: Path, extract: ExtractParams) -> DatasetPaths:
    """Feature files of text and image in `workspace`, produced by the real stages when missing."""
    paths = DatasetPaths(DATASET, workspace)
    missing = [m for m in MODALITIES if not feature_path(paths, extract, m).is_file()]
    if not missing:
        return paths
    from mmrec.config import Params
    from mmrec.data.contract import load_dataset_spec
    from mmrec.extract import extract_modality
    from mmrec.stages import StageContext, run_ingest, run_validate

    spec = load_dataset_spec(REPO / "examples" / DATASET / "dataset.yaml", root=data)
    ctx = StageContext(spec, Params(extract=extract), workspace)
    if not paths.validated_table("items").is_file():
        start = time.perf_counter()
        run_ingest(ctx)
        run_validate(ctx)
        log.info("ingest + validate: %.0fs", time.perf_counter() - start)
    for modality in missing:
        start = time.perf_counter()
        entry = extract_modality(spec, paths, modality, extract)
        log.info(
            "extract %s: %.0fs, %s encoded, %s failed",
            modality,
            time.perf_counter() - start,
            entry.get("encoded"),
            entry.get("failed"),
        )
    return paths


def build_split(data: Path) -> SplitData:
    params = SplitParams(kind="temporal", ratios=(0.8, 0.1, 0.1), cold_item_fraction=0.1, min_user_interactions=1)
    frames = split_interactions(load_ml100k(data), params)
    items = pd.read_csv(data / "items.csv", dtype={"movie_id": str})["movie_id"]
    return split_data_from_frames(
        frames.train, frames.valid, frames.test, frames.cold_test, items=items, split_hash=split_hash(frames)
    )


def evaluate(score_fn: Any, split: SplitData, history: sp.csr_matrix) -> dict[str, Any]:
    out: dict[str, Any] = {"test": evaluate_scores(score_fn, split.test, exclude=history, ks=KS)}
    assert split.cold_test is not None
    out["cold"] = evaluate_scores(score_fn, split.cold_test, exclude=history, ks=KS, candidates=split.cold_items)
    cold_users = np.flatnonzero(np.diff(split.cold_test.indptr) > 0)
    out["cold_personalisation"] = rank_personalisation(score_fn, cold_users, split.cold_items)["mean_spearman"]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    extract = ExtractParams.model_validate({"progress": False, "device": "cpu", "workers": args.threads})
    paths = ensure_features(Path(args.workspace), Path(args.data), extract)
    split = build_split(Path(args.data))
    feats, masks = load_item_features(paths, extract, split.item_ids, MODALITIES)
    train = with_features(split.train, feats, masks)
    history = sp.csr_matrix(split.train.matrix + split.valid)
    history.data[:] = 1.0
    n_cold = len(split.cold_items)
    results: dict[str, Any] = {
        "split": {
            "hash": split.split_hash,
            "users": int(train.n_users),
            "items": int(train.n_items),
            "train": int(train.nnz),
            "valid": int(split.valid.nnz),
            "test": int(split.test.nnz),
            "cold_items": n_cold,
            "cold_interactions": int(split.cold_test.nnz),
        },
        "features": {m: {"dim": int(feats[m].shape[1]), "present": int(masks[m].sum())} for m in MODALITIES},
        "models": {},
    }
    for name in args.models:
        model = create_model(name, **args.params.get(name, {}))
        model.fit(train, split.valid)
        secs = [h["seconds"] for h in model.history if "seconds" in h]
        entry = evaluate(model.score, split, history)
        entry.update(
            train_seconds=model.train_seconds,
            epochs=model.epochs,
            best_epoch=model.best_epoch,
            seconds_per_epoch=float(np.mean(secs)) if secs else model.train_seconds,
            params=model.get_params(),
        )
        results["models"][name] = entry
        log.info(
            "%s: test R@20 %.4f, cold R@20 %.4f (%.0fs)",
            name,
            entry["test"]["recall@20"],
            entry["cold"]["recall@20"],
            model.train_seconds,
        )
    rand = user_metrics(
        random_score_fn(train.n_items, seed=0), split.cold_test, history, KS, candidates=split.cold_items
    )
    expected = expected_random(rand, KS)
    results["random_cold"] = {**rand.summary(KS), "expected_recall@20": expected["recall@20"], "expected": expected}
    return results


def report(results: dict[str, Any]) -> str:
    r20 = results["random_cold"]["recall@20"]
    lines = [
        f"split {results['split']}",
        f"features {results['features']}",
        "",
        (
            f"{'model':<12} {'test R@20':>9} {'test N@20':>9} {'cold R@20':>9} {'cold N@20':>9} "
            f"{'cold/rand':>9} {'cold rho':>8} {'s/epoch':>8} {'epochs':>6} {'train s':>8}"
        ),
    ]
    for name, e in results["models"].items():
        lines.append(
            f"{name:<12} {e['test']['recall@20']:>9.4f} {e['test']['ndcg@20']:>9.4f} {e['cold']['recall@20']:>9.4f} "
            f"{e['cold']['ndcg@20']:>9.4f} {e['cold']['recall@20'] / max(r20, 1e-9):>9.2f} "
            f"{e['cold_personalisation']:>8.3f} {e['seconds_per_epoch']:>8.2f} {e['epochs']:>6} {e['train_seconds']:>8.1f}"
        )
    rc = results["random_cold"]
    lines.append(
        f"{'random':<12} {'':>9} {'':>9} {rc['recall@20']:>9.4f} {rc['ndcg@20']:>9.4f} {1.0:>9.2f}"
        f"   (expected R@20 {rc['expected_recall@20']:.4f})"
    )
    if "lightgcn" in results["models"]:
        base = results["models"]["lightgcn"]["test"]
        for name, e in results["models"].items():
            if name != "lightgcn":
                lines.append(
                    f"{name} / lightgcn warm test: R@20 x{e['test']['recall@20'] / base['recall@20']:.3f}, "
                    f"N@20 x{e['test']['ndcg@20'] / base['ndcg@20']:.3f}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--workspace", default="/tmp/mmrec-mm-bench")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), type=lambda s: [m for m in s.split(",") if m])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument(
        "--params",
        default="{}",
        type=json.loads,
        help='hyper-parameters per model as JSON, e.g. \'{"mm_graph": {"knn_k": 20}}\'',
    )
    ap.add_argument(
        "--metrics",
        default=None,
        help="instead of training: print this metrics.json (e.g. reports/ml100k-mm/metrics.json from "
        "`mmrec tune` + `mmrec evaluate`) next to the reference figures of --reference",
    )
    ap.add_argument(
        "--reference",
        default=None,
        help="reference figures with their split hash and provenance (YAML); default: the file of "
        f"{REFERENCE.parent.relative_to(REPO)}/ measured on the report's split, else {REFERENCE.name}",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.metrics:
        from mmrec.reference import compare, find_reference, format_comparison, load_reference

        metrics = json.loads(Path(args.metrics).read_text())
        reference = Path(args.reference) if args.reference else find_reference(REFERENCE.parent, metrics) or REFERENCE
        print(f"reference file: {reference}")
        print(format_comparison(compare(metrics, load_reference(reference))))
        return 0
    results = run(args)
    print(report(results))
    if args.out:
        write_json(Path(args.out), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
