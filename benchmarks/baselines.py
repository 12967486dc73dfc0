"""Collaborative baselines on MovieLens-100K against the RecBole 1.2.1 reference, same protocol.

Protocol (RecBole's, so the numbers compare): every rating is an interaction; per user, rows
sorted by time (stable, ties in file order), 80/10/10 by RecBole's `split_by_ratio` rule; full
ranking over all items; valid ranked with training items masked, test with train + valid masked.
Hyper-parameters are the models' defaults (chosen on validation); test is evaluated once.

    python benchmarks/baselines.py [--data DIR] [--models a,b] [--threads N] [--seeds 1,2]

Prints the split hash, a table of valid/test Recall/NDCG@10/@20, training time, epochs,
seconds/epoch and peak RSS per model, the reference side by side with ours/reference ratios,
LightGCN's seconds/epoch against the reference's, and (with --seeds) the spread over seeds.
The metrics came out identical with 1 and 2 threads (each sparse row is reduced by one thread).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmrec.config import SplitParams
from mmrec.constants import ITEM_ID, SOURCE_ROW, TIMESTAMP, USER_ID
from mmrec.data.interactions import SplitData, split_data_from_frames
from mmrec.data.splits import split_hash, split_interactions
from mmrec.evaluate import evaluate_scores
from mmrec.io import write_json
from mmrec.models import create_model

# beside the repo, as tests/conftest.py finds it: <workspace>/shared/data/ml100k-mm
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml100k-mm"
KS = (10, 20)

# RecBole 1.2.1, same split and protocol: test (recall@20, ndcg@20); LightGCN with lr 0.005.
REFERENCE = {
    "popularity": {"recall@20": 0.109, "ndcg@20": 0.080},
    "bpr": {"recall@20": 0.180, "ndcg@20": 0.134},
    "lightgcn": {"recall@20": 0.196, "ndcg@20": 0.144},
}
REFERENCE_LIGHTGCN_SECONDS_PER_EPOCH = 1.7  # RecBole on the same 2 cores


def load_ml100k(data: Path) -> pd.DataFrame:
    """ratings.csv as contract columns; every rating is an interaction, file order kept for ties."""
    raw = pd.read_csv(data / "ratings.csv", dtype={"user_id": str, "movie_id": str})
    return pd.DataFrame(
        {
            USER_ID: raw["user_id"],
            ITEM_ID: raw["movie_id"],
            TIMESTAMP: raw["timestamp"].astype("int64"),
            SOURCE_ROW: np.arange(1, len(raw) + 1, dtype=np.int64),
        }
    )


def build_split(data: Path) -> SplitData:
    # min_user_interactions=1: RecBole splits every user by the ratio rule, however few rows
    params = SplitParams(kind="temporal", ratios=(0.8, 0.1, 0.1), cold_item_fraction=0.0, min_user_interactions=1)
    frames = split_interactions(load_ml100k(data), params)
    digest = split_hash(frames)
    return split_data_from_frames(frames.train, frames.valid, frames.test, kind="temporal", split_hash=digest)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_model(name: str, split: SplitData, params: dict[str, Any]) -> dict[str, Any]:
    model = create_model(name, **params)
    model.fit(split.train, split.valid)
    train_m = split.train.matrix
    valid = evaluate_scores(model.score, split.valid, exclude=train_m, ks=KS)
    test = evaluate_scores(model.score, split.test, exclude=(train_m + split.valid).tocsr(), ks=KS)
    train_secs = [h["seconds"] for h in model.history if "seconds" in h]
    return {
        "valid": valid,
        "test": test,
        "train_seconds": model.train_seconds,
        "epochs": model.epochs,
        "best_epoch": model.best_epoch,
        # training time only (validation excluded), as RecBole reports its epochs
        "seconds_per_epoch": float(np.mean(train_secs)) if train_secs else model.train_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "params": model.get_params(),
    }


def seed_spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of the @20 metrics (how much one number can move)."""
    out: dict[str, Any] = {"seeds": [r["params"]["seed"] for r in runs]}
    for part in ("valid", "test"):
        for metric in ("recall@20", "ndcg@20"):
            values = np.array([r[part][metric] for r in runs])
            out[f"{part}_{metric}"] = {"mean": float(values.mean()), "std": float(values.std(ddof=0))}
    return out


def report(results: dict[str, dict[str, Any]], split: SplitData) -> str:
    lines = [
        f"split: temporal 80/10/10 (RecBole rule), hash {split.split_hash}",
        f"users {split.train.n_users}, items {split.train.n_items}, train {split.train.nnz}, "
        f"valid {split.valid.nnz}, test {split.test.nnz}",
        "",
        f"{'model':<11}{'v R@10':>8}{'v N@10':>8}{'v R@20':>8}{'v N@20':>8}"
        f"{'t R@10':>8}{'t N@10':>8}{'t R@20':>8}{'t N@20':>8}"
        f"{'train s':>9}{'epochs':>7}{'best':>5}{'s/ep':>7}{'RSS MB':>8}",
    ]
    for name, r in results.items():
        v, t = r["valid"], r["test"]
        lines.append(
            f"{name:<11}"
            + "".join(f"{d[f'{m}@{k}']:>8.4f}" for d in (v, t) for k in KS for m in ("recall", "ndcg"))
            + f"{r['train_seconds']:>9.1f}{r['epochs']:>7d}{r['best_epoch']:>5d}"
            + f"{r['seconds_per_epoch']:>7.3f}{r['peak_rss_mb']:>8.0f}"
        )
    lines += ["", "test @20 vs RecBole 1.2.1 reference (same protocol):"]
    lines.append(f"{'model':<11}{'R@20':>8}{'ref':>8}{'ratio':>7}{'N@20':>8}{'ref':>8}{'ratio':>7}  verdict")
    for name, ref in REFERENCE.items():
        if name not in results:
            continue
        t = results[name]["test"]
        r_ratio, n_ratio = t["recall@20"] / ref["recall@20"], t["ndcg@20"] / ref["ndcg@20"]
        ok = r_ratio >= 1.0 and n_ratio >= 1.0
        lines.append(
            f"{name:<11}{t['recall@20']:>8.4f}{ref['recall@20']:>8.3f}{r_ratio:>7.3f}"
            f"{t['ndcg@20']:>8.4f}{ref['ndcg@20']:>8.3f}{n_ratio:>7.3f}  {'matches' if ok else 'BELOW reference'}"
        )
    spreads = {name: r["seed_spread"] for name, r in results.items() if "seed_spread" in r}
    if spreads:
        lines += ["", "mean +- std over seeds (the table above is the default seed):"]
        lines.append(
            f"{'model':<11}{'seeds':>14}"
            + "".join(f"{h:>18}" for h in ("valid R@20", "valid N@20", "test R@20", "test N@20"))
        )
        for name, sp_ in spreads.items():
            cells = "".join(
                f"{sp_[key]['mean']:>10.4f} +-{sp_[key]['std']:.4f}"
                for key in ("valid_recall@20", "valid_ndcg@20", "test_recall@20", "test_ndcg@20")
            )
            lines.append(f"{name:<11}{','.join(map(str, sp_['seeds'])):>14}{cells}")
    if "lightgcn" in results:
        spe = results["lightgcn"]["seconds_per_epoch"]
        lines.append(
            f"\nlightgcn s/epoch {spe:.3f} (training only, {results['lightgcn']['threads']} thread(s)) vs "
            f"reference {REFERENCE_LIGHTGCN_SECONDS_PER_EPOCH} on 2 cores "
            f"-> {REFERENCE_LIGHTGCN_SECONDS_PER_EPOCH / spe:.1f}x faster"
        )
        if "bpr" in results:
            beats = results["lightgcn"]["test"]["recall@20"] > results["bpr"]["test"]["recall@20"]
            lines.append(f"lightgcn beats bpr on test recall@20: {beats}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding ratings.csv (ml100k-mm layout)")
    ap.add_argument("--models", default="popularity,itemknn,bpr,lightgcn", help="comma-separated registry names")
    ap.add_argument("--params", default="{}", help='JSON overrides per model, e.g. \'{"bpr": {"lr": 0.002}}\'')
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared 2-core machine a second thread mostly waits; "
        "the reference used both cores, so one thread makes the speed comparison conservative)",
    )
    ap.add_argument(
        "--seeds",
        default="",
        help="extra seeds for the trained models, e.g. 1,2: adds mean +- std over the default seed and these",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    overrides = json.loads(args.params)
    extra_seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    start = time.perf_counter()
    split = build_split(args.data)
    print(f"split built in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    results = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        t0 = time.perf_counter()
        params = overrides.get(name, {})
        results[name] = run_model(name, split, params)
        results[name]["threads"] = args.threads
        print(f"{name}: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        if extra_seeds and name in ("bpr", "lightgcn"):
            runs = [results[name]] + [run_model(name, split, {**params, "seed": s}) for s in extra_seeds]
            results[name]["seed_spread"] = seed_spread(runs)
            print(f"{name}: {len(extra_seeds)} more seeds done", file=sys.stderr)
    print(report(results, split))
    if args.json:
        write_json(args.json, {"split_hash": split.split_hash, "models": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
