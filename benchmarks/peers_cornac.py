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
import itertools
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmrec.constants import ITEM_ID, USER_ID

log = logging.getLogger("benchmarks.peers_cornac")

KS = (10, 20)
MAIN = "recall@20"
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

ScoreFn = Callable[[np.ndarray], np.ndarray]


class PeerMissing(RuntimeError):
    """The peer toolkit (a package outside mmrec's dependencies) cannot be imported."""


def require_cornac() -> Any:
    """Import cornac, or raise PeerMissing naming the missing package and how to install it."""
    try:
        import cornac
    except ImportError as exc:  # the package itself or one of its own imports (e.g. powerlaw)
        missing = getattr(exc, "name", None) or "cornac"
        raise PeerMissing(f"cornac is not importable (missing package: {missing!r}: {exc}); {INSTALL_HINT}") from exc
    return cornac


# --- pure helpers (tests/unit/test_peers_cornac.py) ---------------------------------------------


def parse_values(text: str) -> dict[str, Any]:
    """`"k=64,max_iter=200"` -> `{"k": 64, "max_iter": 200}` (ints, floats, true/false, else str)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad setting {part!r}: expected key=value, e.g. 'k=64'")
        out[key.strip()] = _scalar(value.strip())
    return out


def parse_grid(text: str) -> dict[str, list[Any]]:
    """`"learning_rate=0.001,0.005;k2=10,50"` -> `{"learning_rate": [0.001, 0.005], "k2": [10, 50]}`."""
    grid: dict[str, list[Any]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, values = part.partition("=")
        vals = [_scalar(v.strip()) for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not vals:
            raise ValueError(f"bad grid entry {part!r}: expected key=v1,v2,... (entries separated by ';')")
        if key.strip() in grid:
            raise ValueError(f"grid key {key.strip()!r} given twice")
        grid[key.strip()] = vals
    return grid


def _scalar(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def grid_settings(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid, in a fixed order (the first key varies slowest)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def choose(trials: Sequence[Mapping[str, Any]], metric: str = MAIN) -> int:
    """Index of the trial with the best validation `metric` (`trial["selection"][metric]`).

    Only the selection block is read (it holds validation figures only); ties go to the earlier
    trial, so the choice is reproducible. Raises ValueError when no trial has the metric.
    """
    best, best_val = -1, -np.inf
    for i, trial in enumerate(trials):
        val = (trial.get("selection") or {}).get(metric)
        if val is not None and np.isfinite(val) and val > best_val:
            best, best_val = i, float(val)
    if best < 0:
        raise ValueError(f"no trial has a finite validation {metric!r}")
    return best


def positions(ours: Sequence[str] | np.ndarray, theirs: Mapping[str, int]) -> np.ndarray:
    """For each of our ids (in our index order), its index in the peer's id map; -1 if unknown."""
    return np.fromiter((theirs.get(str(i), -1) for i in ours), dtype=np.int64, count=len(ours))


def to_our_items(scores: np.ndarray, item_pos: np.ndarray) -> np.ndarray:
    """Peer scores (B, n_scored) over the peer's item index -> (B, len(item_pos)) over ours.

    `item_pos[j]` is our item j's peer index (-1: the peer does not know it). An item the peer
    gives no score (unknown, or beyond the scored width) gets the row's minimum score, as
    Cornac's `Recommender.rank` does for unknown items.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    item_pos = np.asarray(item_pos, dtype=np.int64)
    scored = (item_pos >= 0) & (item_pos < scores.shape[1])
    out = np.empty((scores.shape[0], len(item_pos)), dtype=np.float64)
    out[:] = scores.min(axis=1, keepdims=True) if scores.shape[1] else 0.0
    out[:, scored] = scores[:, item_pos[scored]]
    return out


def peer_score_fn(score_user: Callable[[int], np.ndarray], user_pos: np.ndarray, item_pos: np.ndarray) -> ScoreFn:
    """mmrec's ScoreFn (our user indices -> (B, our items)) around a peer's per-user `score`.

    A user the peer does not know gets the same score for every item (all tied: the evaluator
    then ranks by its tie rule and the cold slice counts the user at the random expectation).
    """
    user_pos = np.asarray(user_pos, dtype=np.int64)

    def score(users: np.ndarray) -> np.ndarray:
        out = np.zeros((len(users), len(item_pos)), dtype=np.float64)
        for row, u in enumerate(np.asarray(users, dtype=np.int64)):
            p = int(user_pos[u])
            if p >= 0:
                out[row] = to_our_items(np.asarray(score_user(p))[None, :], item_pos)[0]
        return out

    return score


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


# --- scoring through mmrec's evaluator -----------------------------------------------------------


class Slices:
    """The split's four evaluated parts with their masks and candidates, as `mmrec evaluate` builds them."""

    def __init__(self, data: Any, ev: Any) -> None:
        import scipy.sparse as sp

        from mmrec import cold

        self.data, self.ev = data, ev
        train = data.train.matrix
        history = sp.csr_matrix(train + data.valid)
        history.data[:] = 1.0
        # part -> (target, exclude, candidates): valid masks train; test masks train + valid; the
        # cold parts rank only their own items (cold_valid masks train, cold_test train + valid)
        self.parts: dict[str, tuple[Any, Any, np.ndarray | None]] = {
            "valid": (data.valid, train, None),
            "test": (data.test, history, None),
        }
        if data.cold_valid is not None and data.cold_valid.nnz and len(data.cold_valid_items):
            self.parts["cold_valid"] = (data.cold_valid, train, data.cold_valid_items)
        if data.cold_test is not None and data.cold_test.nnz and len(data.cold_items):
            self.parts["cold_test"] = (data.cold_test, history, data.cold_items)
        metrics = [f"recall@{max(KS)}", f"ndcg@{max(KS)}"]
        self.nulls = {
            part: cold.permutation_null(t, ex, c, KS, ev.cold_permutations, ev.seed, metrics=metrics)
            for part, (t, ex, c) in self.parts.items()
            if c is not None
        }

    def score(self, score_fn: ScoreFn, parts: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Metric blocks of `parts` (keys as metrics.json: `recall@20`, ..., and for cold parts
        `tied_users`, `random_lift`, `p_value`, `personalisation`)."""
        from mmrec import cold
        from mmrec.analysis import expected_random, lift, rank_personalisation
        from mmrec.evaluate import user_metrics

        out: dict[str, dict[str, Any]] = {}
        bs = self.ev.batch_size
        for part in parts:
            target, exclude, cand = self.parts[part]
            um = user_metrics(score_fn, target, exclude, KS, candidates=cand, batch_size=bs)
            if cand is None:
                out[part] = um.summary(KS)
                continue
            tied = cold.tied_users(score_fn, um.users, cand, bs)
            _, block = cold.cold_summary(um, tied, KS)
            # the users and targets depend only on target/mask/candidates, so this is the random
            # reference metrics.json's random.cold.expected holds for the same slice
            expected = expected_random(um, KS)
            block["random_expected"] = {k: expected[k] for k in (f"recall@{k}" for k in KS)}
            block["random_lift"] = lift(block, expected, [f"{m}@{k}" for m in ("recall", "ndcg") for k in KS])
            if not block.get("unscored"):
                block["p_value"] = cold.p_values(self.nulls[part], block)
            block["personalisation"] = rank_personalisation(
                score_fn, um.users, cand, self.ev.personalisation_pairs, self.ev.seed
            )
            out[part] = block
        return out

    def null_summary(self) -> dict[str, Any]:
        from mmrec import cold

        return {part: cold.public(null) for part, null in self.nulls.items()}


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
    from mmrec.context import StageContext
    from mmrec.data.splits import read_split_frames
    from mmrec.models.item_features import load_item_features
    from mmrec.stage_inputs import load_split_data

    wall = time.perf_counter()
    ctx = StageContext.from_files(args.dataset, args.params, args.workspace, root=args.root)
    data = load_split_data(ctx)
    frames, meta = read_split_frames(ctx.paths, ctx.params.split.kind)
    ev = ctx.params.evaluate
    seed = ctx.params.train.seed if args.seed is None else args.seed
    slices = Slices(data, ev)
    item_ids = [str(i) for i in data.item_ids]
    user_ids = [str(u) for u in data.user_ids]
    log.info(
        "split %s (warm %s): %d users, %d items, cold_valid %d items, cold_test %d items",
        meta["hash"][:12],
        meta.get("warm_hash", "")[:12],
        len(user_ids),
        len(item_ids),
        len(data.cold_valid_items),
        len(data.cold_items),
    )
    features: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    if "vbpr" in args.models:
        features, masks = load_item_features(ctx.paths, ctx.params.extract, item_ids, args.modalities)
    results: dict[str, Any] = {
        "dataset": ctx.spec.name,
        "split": {"kind": meta["kind"], "hash": meta["hash"], "warm_hash": meta.get("warm_hash")},
        "cornac": cornac.__version__,
        "seed": seed,
        "modalities": list(args.modalities),
        "random": {"null": slices.null_summary()},
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


def _f(block: Mapping[str, Any] | None, key: str) -> str:
    v = (block or {}).get(key)
    return "-" if v is None else f"{v:.4f}"


def report(results: Mapping[str, Any]) -> str:
    """The table: warm valid/test, cold_valid, cold_test with lift over random and p."""
    lines = [
        f"split {results['split']['hash'][:12]} (warm {str(results['split'].get('warm_hash'))[:12]}), "
        f"Cornac {results['cornac']}, seed {results['seed']}, wall {results['wall_seconds']:.0f} s",
        "| model | chosen on | valid R@20 | valid N@20 | test R@20 | test N@20 | cold_valid R@20 (x rnd) "
        "| cold_test R@20 | x random | p | cold_test N@20 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in results["models"].items():
        cv, ct = e.get("cold_valid") or {}, e.get("cold_test") or {}
        cv_lift = (cv.get("random_lift") or {}).get(MAIN)
        lift = (ct.get("random_lift") or {}).get(MAIN)
        p = (ct.get("p_value") or {}).get(MAIN)
        lines.append(
            f"| cornac {name} | {e['select']} | {_f(e['valid'], MAIN)} | {_f(e['valid'], 'ndcg@20')} "
            f"| {_f(e.get('test'), MAIN)} | {_f(e.get('test'), 'ndcg@20')} "
            f"| {_f(cv, MAIN)} ({'-' if cv_lift is None else f'{cv_lift:.2f}x'}) | {_f(ct, MAIN)} "
            f"| {'-' if lift is None else f'{lift:.2f}x'} | {'-' if p is None else f'{p:.3f}'} | {_f(ct, 'ndcg@20')} |"
        )
    for name, e in results["models"].items():
        lines.append(f"{name}: chosen {e['chosen']} on {e['select']} Recall@20; trials:")
        for t in e["trials"]:
            lines.append(
                f"  {t['params']}: valid R@20 {_f(t['valid'], MAIN)}, cold_valid R@20 "
                f"{_f(t.get('cold_valid'), MAIN)}, fit {t['fit_seconds']:.0f} s"
            )
    return "\n".join(lines)


def _select(text: str) -> dict[str, str]:
    out = parse_values(text)
    bad = {m: s for m, s in out.items() if m not in MODELS or s not in ("valid", "cold_valid")}
    if bad:
        raise argparse.ArgumentTypeError(f"--select takes model=valid|cold_valid for models {list(MODELS)}, got {bad}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True, help="workspace of `mmrec stage split/extract_*` (data/<name>/...)")
    ap.add_argument("--dataset", required=True, help="the dataset.yaml the workspace was built from")
    ap.add_argument("--root", default=None, help="data root overriding dataset.yaml's `root:`")
    ap.add_argument("--params", default=str(REPO / "params.yaml"), help="base params file (evaluate.*, split.kind)")
    ap.add_argument("--models", default=",".join(MODELS), type=lambda s: [m for m in s.split(",") if m])
    ap.add_argument("--modalities", default="text,image", type=lambda s: [m for m in s.split(",") if m])
    for m in MODELS:
        ap.add_argument(f"--{m}-grid", default=DEFAULT_GRID[m], help=f"{m} grid, key=v1,v2;key=... ")
        ap.add_argument(f"--{m}-fixed", default=DEFAULT_FIXED[m], help=f"fixed Cornac {m} arguments, key=v,...")
    ap.add_argument(
        "--select", default="", type=_select, help="model=valid|cold_valid (default bpr=valid,vbpr=cold_valid)"
    )
    ap.add_argument("--seed", type=int, default=None, help="Cornac's seed (default: train.seed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--valid-only", action="store_true", help="score valid and cold_valid only (test untouched)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; available: {list(MODELS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        results = run(args)
    except PeerMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(results))
    if args.out:
        from mmrec.io import write_json

        write_json(Path(args.out), json.loads(json.dumps(results, default=_jsonable)))
    return 0


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


if __name__ == "__main__":
    sys.exit(main())
