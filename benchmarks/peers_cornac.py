"""Cornac's BPR and VBPR on an exported mmrec split, scored by mmrec's own evaluator.

Why: the peers' cold-start figures (benchmarks/reference/ml100k-mm.yaml) were measured on another
cold slice (all 168 newest items) than ours (cold_test, the newer half), so their lifts over
random do not compare with ours. This script trains Cornac's models on exactly our exported split
(`data/<name>/splits/<kind>/*.tsv` and the feature parquet files of a workspace) and scores them
with the functions `mmrec evaluate` uses for its own models:

- warm valid: full ranking over all items, training items masked; warm test: training + valid
  masked (`mmrec.evaluate.user_metrics`);
- cold_valid / cold_test: only the slice's own items are candidates, users whose candidates all
  tie are counted at the exact random expectation (`mmrec.cold.cold_summary`), the lift over the
  exact random expectation (`mmrec.analysis.expected_random`, `lift`), and for cold_test the
  one-sided p-value against `evaluate.cold_permutations` random global orders with
  `evaluate.seed` (`mmrec.cold.permutation_null`, `p_values`: the same null as metrics.json's);
- hyper-parameters from a small grid, chosen on validation only: warm valid Recall@20 for BPR,
  cold_valid Recall@20 for VBPR (`--select`). Test and cold_test are scored once, for the chosen
  setting only.

How Cornac is fed (its own protocol, `BaseMethod.from_splits`, nothing re-implemented):
train.tsv as training data (every row an interaction of rating 1: the third TSV column is a
timestamp, which Cornac's "UIR" reader would take for a rating), valid.tsv as validation data,
test + cold_valid + cold_test as its test data (so every id gets an index; Cornac samples
negatives from the training items only). VBPR's "image" modality is the concatenation of the
text and image vectors (`--vbpr-grid features=raw,centred`: as extracted, or each modality
mean-centred and L2-normalised as mmrec's vbpr sees them; absent vectors are zeros). Scores are
`model.score(user_idx)` over Cornac's item index, mapped onto ours; an item Cornac has no score
for gets the row's minimum, Cornac's own rule in `Recommender.rank`. Cornac's BPR scores cold
items with their untrained initial vectors (zero bias), so its cold figures are a random order.

Cornac is a peer, not a dependency of mmrec: install it beside the project, e.g.

    .venv/bin/pip install --target /work/peers-lib --no-deps cornac==3.0.1 powerlaw
    OMP_NUM_THREADS=1 PYTHONPATH=/work/peers-lib:$PWD nice -n 19 .venv/bin/python benchmarks/peers_cornac.py \\
        --workspace /work/ml100k-ws --dataset examples/ml100k-mm/dataset.yaml --models bpr,vbpr --out peers.json
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # as a script only (importing it, e.g. from the tests, changes nothing)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MMREC_THREADS"):
        os.environ.setdefault(_var, "1")  # read at import time by numpy / torch; shared 2-core machines

import argparse
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.append(str(REPO / "benchmarks"))  # peers_common (appended: the folder's names must not shadow packages)

from peers_common import (
    MAIN,
    SELECTABLE,
    TABLE_HEAD,
    PeerMissing,
    add_split_arguments,
    choose,
    fmt,
    grid_settings,
    open_split,
    parse_grid,
    parse_values,
    peer_score_fn,
    positions,
    run_script,
    table_row,
)

from mmrec.constants import ITEM_ID, USER_ID

log = logging.getLogger("benchmarks.peers_cornac")

MODELS = ("bpr", "vbpr")
#: where each model's setting is chosen (never test): BPR has no content, so warm valid; VBPR is
#: compared on cold start, so the cold_valid slice (the older half of the cold items)
DEFAULT_SELECT = {"bpr": "valid", "vbpr": "cold_valid"}
#: fixed Cornac arguments (overridable with --bpr-fixed / --vbpr-fixed) and the default grids
DEFAULT_FIXED = {
    "bpr": "k=64",
    "vbpr": "k=10,n_epochs=30,batch_size=100,lambda_w=0.01,lambda_b=0.01,lambda_e=0.0",
}
DEFAULT_GRID = {
    "bpr": "learning_rate=0.01,0.05,0.1;lambda_reg=0.001,0.01;max_iter=100,200",
    "vbpr": "features=raw,centred;learning_rate=0.002,0.01;k2=10,50",
}
#: grid keys the script consumes itself (not passed to Cornac)
SCRIPT_KEYS = {"features"}
INSTALL_HINT = (
    "install it outside the project, e.g. `.venv/bin/pip install --target /work/peers-lib --no-deps "
    "cornac==3.0.1 powerlaw`, and run with PYTHONPATH=/work/peers-lib:$PWD"
)


def require_cornac() -> Any:
    """Import cornac, or raise PeerMissing naming the missing package and how to install it."""
    try:
        import cornac
    except ImportError as exc:  # the package itself or one of its own imports (e.g. powerlaw)
        missing = getattr(exc, "name", None) or "cornac"
        raise PeerMissing(f"cornac is not importable (missing package: {missing!r}: {exc}); {INSTALL_HINT}") from exc
    return cornac


# --- Cornac's input (tests/unit/test_peers_cornac.py) ----------------------------------------


def interaction_triples(*frames: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(user, item, 1.0) rows for Cornac's "UIR" format from split frames (the timestamp dropped)."""
    out: list[tuple[str, str, float]] = []
    for df in frames:
        out.extend((str(u), str(i), 1.0) for u, i in zip(df[USER_ID], df[ITEM_ID], strict=True))
    return out


def content_matrix(
    features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], mode: str, modalities: Sequence[str]
) -> np.ndarray:
    """The modalities' vectors side by side, one row per item of our index (absent vectors: zeros).

    `mode`: `raw` (as extracted) or `centred` (mean-centred over the items that have the modality
    and L2-normalised, `mmrec.models.item_features.centred_unit`: what mmrec's vbpr is fed).
    """
    from mmrec.models.item_features import centred_unit

    if mode not in ("raw", "centred"):
        raise ValueError(f"features must be 'raw' or 'centred', got {mode!r}")
    blocks = []
    for m in modalities:
        x = np.asarray(features[m], dtype=np.float32)
        mask = np.asarray(masks[m], dtype=bool)
        blocks.append(centred_unit(x, mask) if mode == "centred" else np.where(mask[:, None], x, 0.0))
    return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)


# --- Cornac --------------------------------------------------------------------------------------


def cornac_method(frames: Any, seed: int, image: np.ndarray | None = None, item_ids: Sequence[str] = ()) -> Any:
    """Cornac's `BaseMethod.from_splits` over our split (see the module docstring for the parts)."""
    from cornac.data import ImageModality
    from cornac.eval_methods import BaseMethod

    kwargs: dict[str, Any] = {}
    if image is not None:
        kwargs["item_image"] = ImageModality(features=image, ids=[str(i) for i in item_ids])
    held_out = interaction_triples(frames.test, frames.cold_valid, frames.cold_test)
    method = BaseMethod.from_splits(
        train_data=interaction_triples(frames.train),
        test_data=held_out,
        val_data=interaction_triples(frames.valid),
        exclude_unknowns=False,
        seed=seed,
        verbose=False,
        **kwargs,
    )
    if image is not None:  # FeatureModality._swap_feature keeps a stale row for an id it was not given
        unknown = set(method.global_iid_map) - {str(i) for i in item_ids}
        if unknown:
            raise ValueError(
                f"{len(unknown)} split items have no row in the feature matrix, e.g. {sorted(unknown)[:3]}"
            )
    return method


def build_model(name: str, params: Mapping[str, Any], seed: int) -> Any:
    from cornac.models import BPR, VBPR

    cornac_params = {k: v for k, v in params.items() if k not in SCRIPT_KEYS}
    if name == "bpr":
        return BPR(**cornac_params, num_threads=1, seed=seed, verbose=False)
    if name == "vbpr":
        return VBPR(**cornac_params, use_gpu=False, seed=seed, verbose=False)
    raise ValueError(f"unknown model {name!r}; available: {list(MODELS)}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    cornac = require_cornac()
    import torch

    torch.set_num_threads(args.threads)
    from mmrec.models.item_features import load_item_features

    wall = time.perf_counter()
    split = open_split(args.dataset, args.params, args.workspace, args.root, args.seed)
    ctx, frames, seed, slices = split.ctx, split.frames, split.seed, split.slices
    item_ids, user_ids = split.item_ids, split.user_ids
    features: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    if "vbpr" in args.models:
        features, masks = load_item_features(ctx.paths, ctx.params.extract, item_ids, args.modalities)
    results: dict[str, Any] = {
        **split.header(),
        "cornac": cornac.__version__,
        "modalities": list(args.modalities),
        "models": {},
    }
    methods: dict[str, Any] = {}
    for name in args.models:
        grid = parse_grid(getattr(args, f"{name}_grid"))
        fixed = parse_values(getattr(args, f"{name}_fixed"))
        select = args.select.get(name, DEFAULT_SELECT[name])
        settings = grid_settings(grid)
        trials: list[dict[str, Any]] = []
        models: list[Any] = []
        for i, setting in enumerate(settings):
            params = {**fixed, **setting}
            mode = params.get("features", "raw") if name == "vbpr" else None
            if mode not in methods:
                image = content_matrix(features, masks, mode, args.modalities) if mode else None
                methods[mode] = cornac_method(frames, seed, image, item_ids)
            method = methods[mode]
            start = time.perf_counter()
            model = build_model(name, params, seed).fit(method.train_set, method.val_set)
            fit_s = time.perf_counter() - start
            score_fn = peer_score_fn(
                model.score, positions(user_ids, method.global_uid_map), positions(item_ids, method.global_iid_map)
            )
            figures = slices.score(score_fn, [p for p in ("valid", "cold_valid") if p in slices.parts])
            trial = {"params": params, "fit_seconds": round(fit_s, 2), **figures, "selection": figures[select]}
            trials.append(trial)
            models.append(model)
            log.info(
                "%s trial %d/%d %s: valid R@20 %.4f, cold_valid R@20 %.4f (%.0f s)",
                name,
                i + 1,
                len(settings),
                setting,
                figures["valid"][MAIN],
                figures.get("cold_valid", {}).get(MAIN, float("nan")),
                fit_s,
            )
        best = choose(trials)
        chosen = trials[best]
        model = models[best]
        method = methods[chosen["params"].get("features", "raw") if name == "vbpr" else None]
        score_fn = peer_score_fn(
            model.score, positions(user_ids, method.global_uid_map), positions(item_ids, method.global_iid_map)
        )
        # the test parts, once, for the chosen setting only (none with --valid-only: smoke runs)
        tests = [] if args.valid_only else ["test", "cold_test"]
        final = slices.score(score_fn, [p for p in tests if p in slices.parts])
        results["models"][name] = {
            "select": select,
            "grid": grid,
            "fixed": fixed,
            "chosen": chosen["params"],
            "valid": chosen["valid"],
            "cold_valid": chosen.get("cold_valid"),
            **final,
            "fit_seconds": chosen["fit_seconds"],
            "trials": [{k: v for k, v in t.items() if k != "selection"} for t in trials],
        }
        models.clear()
    results["wall_seconds"] = round(time.perf_counter() - wall, 1)
    return results


def report(results: Mapping[str, Any]) -> str:
    """The table: warm valid/test, cold_valid, cold_test with lift over random and p."""
    lines = [
        f"split {results['split']['hash'][:12]} (warm {str(results['split'].get('warm_hash'))[:12]}), "
        f"Cornac {results['cornac']}, seed {results['seed']}, wall {results['wall_seconds']:.0f} s",
        *TABLE_HEAD,
    ]
    lines += [table_row(f"cornac {name}", e) for name, e in results["models"].items()]
    for name, e in results["models"].items():
        lines.append(f"{name}: chosen {e['chosen']} on {e['select']} Recall@20; trials:")
        for t in e["trials"]:
            lines.append(
                f"  {t['params']}: valid R@20 {fmt(t['valid'], MAIN)}, cold_valid R@20 "
                f"{fmt(t.get('cold_valid'), MAIN)}, fit {t['fit_seconds']:.0f} s"
            )
    return "\n".join(lines)


def _select(text: str) -> dict[str, str]:
    out = parse_values(text)
    bad = {m: s for m, s in out.items() if m not in MODELS or s not in SELECTABLE}
    if bad:
        raise argparse.ArgumentTypeError(f"--select takes model=valid|cold_valid for models {list(MODELS)}, got {bad}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def extra(ap: argparse.ArgumentParser) -> None:
        ap.add_argument(
            "--select", default="", type=_select, help="model=valid|cold_valid (default bpr=valid,vbpr=cold_valid)"
        )

    add_split_arguments(ap, MODELS, DEFAULT_GRID, DEFAULT_FIXED, "Cornac", extra)
    return run_script(ap, argv, MODELS, run, report)


if __name__ == "__main__":
    sys.exit(main())
