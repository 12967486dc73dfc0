"""What the peer scripts (benchmarks/peers_cornac.py, benchmarks/peers_mmrec.py) share.

Both train another toolkit on an exported mmrec split and score it with the functions `mmrec
evaluate` uses for its own models; this module holds the parts that do not depend on the toolkit:
the grid syntax and the validation-only choice, the mapping between a peer's id index and ours,
the four scored slices with their masks, candidates and permutation null (`Slices`), opening a
workspace's split (`open_split`), the results table and the JSON output. Nothing here imports a
peer toolkit (tests/unit/test_peers_common.py runs without them).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("benchmarks.peers")

KS = (10, 20)
MAIN = "recall@20"
#: the slices a setting (or epoch) may be chosen on: never test
SELECTABLE = ("valid", "cold_valid")

ScoreFn = Callable[[np.ndarray], np.ndarray]
#: the repository root (default `--params`: its params.yaml)
REPO = Path(__file__).resolve().parents[1]


class PeerMissing(RuntimeError):
    """The peer toolkit (a package outside mmrec's dependencies) cannot be imported."""


# --- pure helpers ---------------------------------------------------------------------------------


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


@dataclass
class SplitRun:
    """A workspace's split as the peer scripts use it (see `open_split`)."""

    ctx: Any  # mmrec.context.StageContext
    data: Any  # mmrec.data.interactions.SplitData: our user and item index, the sparse parts
    frames: Any  # mmrec.data.splits: the exported TSV files as frames (train, valid, test, cold_*)
    meta: dict[str, Any]  # split.json
    seed: int
    slices: Slices
    user_ids: list[str]
    item_ids: list[str]

    def header(self) -> dict[str, Any]:
        """The provenance block of a results file: dataset, split hashes, seed, random null."""
        return {
            "dataset": self.ctx.spec.name,
            "split": {"kind": self.meta["kind"], "hash": self.meta["hash"], "warm_hash": self.meta.get("warm_hash")},
            "seed": self.seed,
            "random": {"null": self.slices.null_summary()},
        }


def open_split(dataset: str, params: str, workspace: str, root: str | None = None, seed: int | None = None) -> SplitRun:
    """Our split of a workspace (`mmrec stage split` output), its slices and null; `seed` defaults to train.seed."""
    from mmrec.context import StageContext
    from mmrec.data.splits import read_split_frames
    from mmrec.stage_inputs import load_split_data

    ctx = StageContext.from_files(dataset, params, workspace, root=root)
    data = load_split_data(ctx)
    frames, meta = read_split_frames(ctx.paths, ctx.params.split.kind)
    run = SplitRun(
        ctx=ctx,
        data=data,
        frames=frames,
        meta=meta,
        seed=ctx.params.train.seed if seed is None else seed,
        slices=Slices(data, ctx.params.evaluate),
        user_ids=[str(u) for u in data.user_ids],
        item_ids=[str(i) for i in data.item_ids],
    )
    log.info(
        "split %s (warm %s): %d users, %d items, cold_valid %d items, cold_test %d items",
        meta["hash"][:12],
        meta.get("warm_hash", "")[:12],
        len(run.user_ids),
        len(run.item_ids),
        len(data.cold_valid_items),
        len(data.cold_items),
    )
    return run


# --- output --------------------------------------------------------------------------------------


def fmt(block: Mapping[str, Any] | None, key: str) -> str:
    v = (block or {}).get(key)
    return "-" if v is None else f"{v:.4f}"


TABLE_HEAD = [
    "| model | chosen on | valid R@20 | valid N@20 | test R@20 | test N@20 | cold_valid R@20 (x rnd) "
    "| cold_test R@20 | x random | p | cold_test N@20 |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def table_row(label: str, entry: Mapping[str, Any]) -> str:
    """One row of the results table: warm valid/test, cold_valid, cold_test with lift over random and p."""
    cv, ct = entry.get("cold_valid") or {}, entry.get("cold_test") or {}
    cv_lift = (cv.get("random_lift") or {}).get(MAIN)
    lift = (ct.get("random_lift") or {}).get(MAIN)
    p = (ct.get("p_value") or {}).get(MAIN)
    return (
        f"| {label} | {entry['select']} | {fmt(entry['valid'], MAIN)} | {fmt(entry['valid'], 'ndcg@20')} "
        f"| {fmt(entry.get('test'), MAIN)} | {fmt(entry.get('test'), 'ndcg@20')} "
        f"| {fmt(cv, MAIN)} ({'-' if cv_lift is None else f'{cv_lift:.2f}x'}) | {fmt(ct, MAIN)} "
        f"| {'-' if lift is None else f'{lift:.2f}x'} | {'-' if p is None else f'{p:.3f}'} | {fmt(ct, 'ndcg@20')} |"
    )


def write_results(path: Path | str, results: Mapping[str, Any]) -> None:
    """The results as JSON (numpy scalars and arrays made plain), through mmrec's atomic writer."""
    from mmrec.io import write_json

    write_json(Path(path), json.loads(json.dumps(results, default=_jsonable)))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


# --- command line ---------------------------------------------------------------------------------


def _names(text: str) -> list[str]:
    return [m for m in text.split(",") if m]


def add_split_arguments(
    ap: argparse.ArgumentParser,
    models: Sequence[str],
    grids: Mapping[str, str],
    fixed: Mapping[str, str],
    toolkit: str,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """The options every peer script takes: the workspace and its split, the models with their
    grids and fixed settings, seed, threads, `--valid-only` and `--out`. `extra` adds the
    script's own options after the per-model ones."""
    ap.add_argument("--workspace", required=True, help="workspace of `mmrec stage split/extract_*` (data/<name>/...)")
    ap.add_argument("--dataset", required=True, help="the dataset.yaml the workspace was built from")
    ap.add_argument("--root", default=None, help="data root overriding dataset.yaml's `root:`")
    ap.add_argument("--params", default=str(REPO / "params.yaml"), help="base params file (evaluate.*, split.kind)")
    ap.add_argument("--models", default=",".join(models), type=_names)
    ap.add_argument("--modalities", default="text,image", type=_names)
    for m in models:
        ap.add_argument(f"--{m}-grid", default=grids[m], help=f"{m} grid, key=v1,v2;key=... ({toolkit} names)")
        ap.add_argument(f"--{m}-fixed", default=fixed[m], help=f"fixed {toolkit} {m} settings, key=v,...")
    if extra is not None:
        extra(ap)
    ap.add_argument("--seed", type=int, default=None, help=f"{toolkit}'s seed (default: train.seed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--valid-only", action="store_true", help="score valid and cold_valid only (test untouched)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")


def run_script(
    ap: argparse.ArgumentParser,
    argv: list[str] | None,
    models: Sequence[str],
    run: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[Mapping[str, Any]], str],
) -> int:
    """Parse, check the model names, run, print the table and write `--out`; exit 2 naming the
    missing package when the peer toolkit cannot be imported."""
    args = ap.parse_args(argv)
    unknown = [m for m in args.models if m not in models]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; available: {list(models)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        results = run(args)
    except PeerMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(results))
    if args.out:
        write_results(args.out, results)
    return 0
