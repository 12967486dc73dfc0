"""The MMRec toolbox's FREEDOM and LATTICE on an exported mmrec split, scored by mmrec's own evaluator.

Why: the peers' cold-start figures in benchmarks/reference/ml100k-mm.yaml were measured on another
cold slice (all 168 newest items) than ours (cold_test, the newer half), so their lifts over random
do not compare with ours. This script trains MMRec's (github.com/enoche/MMRec) own model classes
with its own `Trainer` on exactly our exported split and features, and scores the trained models
with the functions `mmrec evaluate` uses (benchmarks/peers_common.py, shared with peers_cornac.py):
warm valid/test over all items with training (+ valid) items masked; cold_valid/cold_test over the
slice's own items, with the lift over the exact random expectation and the permutation p-value.

How MMRec is fed (its own format, `RecDataset` + `TrainDataLoader`, nothing re-implemented):

- one `<dataset>.inter` file (`userID`, `itemID`, `x_label`): train.tsv rows labelled 0,
  valid.tsv 1, test.tsv 2, and the cold_valid + cold_test rows labelled 2 as well, so the cold
  items get an id in MMRec's item index (its `item_num` is the largest id + 1) and no training edge
  (MMRec trains on label 0 only and samples negatives from the training items only). Ids are our
  index order restricted to the ids that occur in the split (catalogue-only items get no MMRec id;
  `to_our_items` gives them the row's minimum).
- `text_feat.npy` / `image_feat.npy` in that item order. An item without a vector (e.g. no poster)
  gets the mean of the others, as MMRec's preprocessing does (preprocessing/3feat-encoder.ipynb):
  a zero row would make its cosine NaN, and torch.topk ranks NaN first, so every item's kNN graph
  would fill with the poster-less items.
- cold items are scored through the item-item kNN graph MMRec builds from the raw features of
  every item in its index (FREEDOM: frozen `mm_adj`; LATTICE: its fixed `original_adj` mixed with
  the learned graph): a cold item's embedding adds its content neighbours' id embeddings.

Training: `Trainer.fit` (Adam, MMRec's LR schedule, its early stopping with `stopping_step`) with
one change: its per-epoch validation (`_valid_epoch`) is our evaluator on our valid and cold_valid
slices, and its per-epoch test evaluation is skipped (test is not looked at while training).
`--stop-on` is the slice its early stopping follows (default warm valid Recall@20, MMRec's
`valid_metric`). The best epoch on each of valid and cold_valid is kept (a copy of the weights).
Each `--select` slice then chooses the setting and the epoch (never test): cold_valid for the cold
comparison (as peers_cornac.py does for VBPR), valid for the warm figures; test and cold_test are
scored once per choice. MMRec's own evaluator (`Trainer.evaluate` on its valid loader) is run on
each chosen model as a cross-check of the warm valid figure (same Recall definition and masks).
Scores are `model.full_sort_predict` for all users at once. MMRec's model code is not changed;
`mmrec_compat` stands in for what newer torch/scipy/numpy removed (`.cuda()` without a GPU,
`dok_matrix._update`, `np.float`) while its models are built and its evaluator runs.

MMRec is a peer, not a dependency of mmrec: put a snapshot beside the project (its `src/` holds
`models/`, `common/`, `utils/`, `configs/`) and install its missing import, e.g.

    git -C MMRec archive HEAD | tar -x -C /work/peers-mmrec; git -C MMRec rev-parse HEAD > /work/peers-mmrec/COMMIT
    .venv/bin/pip install --target /work/peers-lib --no-deps lmdb    # imported by MMRec's utils/dataset.py
    OMP_NUM_THREADS=1 PYTHONPATH=/work/peers-lib nice -n 19 .venv/bin/python benchmarks/peers_mmrec.py \\
        --workspace /work/ml100k-ws --dataset examples/ml100k-mm/dataset.yaml --mmrec-src /work/peers-mmrec \\
        --models freedom,lattice --out peers_mmrec.json
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # as a script only (importing it, e.g. from the tests, changes nothing)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MMREC_THREADS"):
        os.environ.setdefault(_var, "1")  # read at import time by numpy / torch; shared 2-core machines

import argparse
import contextlib
import importlib
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
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

log = logging.getLogger("benchmarks.peers_mmrec")

MODELS = ("freedom", "lattice")
CLASSES = {"freedom": "FREEDOM", "lattice": "LATTICE"}
#: fixed MMRec settings per model (overridable with --<model>-fixed); every name in the model's
#: `hyper_parameters` (a list in its yaml: MMRec's own grid) must get one value here or in the grid.
#: FREEDOM: dropout .8 (the first of MMRec's [.8, .9]); lr .001 (overall.yaml). LATTICE: the
#: LATTICE authors' defaults (CRIPAC-DIG/LATTICE codes/utility/parser.py: lr 5e-4, regs[0] 1e-5),
#: both inside MMRec's grid.
DEFAULT_FIXED = {"freedom": "dropout=0.8", "lattice": "learning_rate=0.0005,reg_weight=0.00001"}
#: FREEDOM's grid: its modality-loss weight (lambda in the paper, `reg_weight`); LATTICE: none
DEFAULT_GRID = {"freedom": "reg_weight=0.0001,0.001", "lattice": ""}
#: the item's split label in the .inter file (MMRec trains on 0, validates on 1, tests on 2)
LABELS = {"train": 0, "valid": 1, "test": 2, "cold_valid": 2, "cold_test": 2}
FEATURE_FILES = {"text": "text_feat.npy", "image": "image_feat.npy"}
INTER_COLUMNS = ("userID", "itemID", "x_label")
INSTALL_HINT = (
    "fetch github.com/enoche/MMRec outside the project (pass its folder as --mmrec-src), install its "
    "missing imports there, e.g. `.venv/bin/pip install --target /work/peers-lib --no-deps lmdb`, and run "
    "with PYTHONPATH=/work/peers-lib"
)


# --- MMRec's input and the epoch choice (tests/unit/test_peers_mmrec.py) ----------------------------


def mmrec_index(ours: Sequence[str] | np.ndarray, used: Iterable[Any]) -> dict[str, int]:
    """MMRec's contiguous ids 0..n-1: our index order, restricted to the ids that occur in `used`."""
    seen = {str(i) for i in used}
    kept = [str(i) for i in ours if str(i) in seen]
    missing = seen - set(kept)
    if missing:
        raise ValueError(f"{len(missing)} ids of the split are not in our index, e.g. {sorted(missing)[:3]}")
    return {i: n for n, i in enumerate(kept)}


def inter_frame(parts: Mapping[str, pd.DataFrame], users: Mapping[str, int], items: Mapping[str, int]) -> pd.DataFrame:
    """MMRec's `.inter` table: every split row as (userID, itemID, x_label), label per `LABELS`.

    Raises ValueError when a part is unknown, an id has no MMRec id, or a cold item has a training
    row (MMRec would then train it: the cold slices would not be cold).
    """
    unknown = set(parts) - set(LABELS)
    if unknown:
        raise ValueError(f"unknown split part(s) {sorted(unknown)}; expected some of {list(LABELS)}")
    train_items = set(parts["train"][ITEM_ID].astype(str)) if "train" in parts else set()
    frames = []
    for part, df in parts.items():
        u = df[USER_ID].astype(str).map(users)
        i = df[ITEM_ID].astype(str).map(items)
        if u.isna().any() or i.isna().any():
            raise ValueError(f"{part}: {int(u.isna().sum())} users and {int(i.isna().sum())} items have no MMRec id")
        if part.startswith("cold") and train_items & set(df[ITEM_ID].astype(str)):
            raise ValueError(f"{part}: items with training rows, e.g. {sorted(train_items & set(df[ITEM_ID]))[:3]}")
        frames.append(
            pd.DataFrame({"userID": u.astype(np.int64), "itemID": i.astype(np.int64), "x_label": LABELS[part]})
        )
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=np.int64) for c in INTER_COLUMNS})
    return pd.concat(frames, ignore_index=True)


def feature_rows(x: np.ndarray, present: np.ndarray, our_pos: np.ndarray) -> tuple[np.ndarray, int]:
    """One modality's vectors in MMRec's item order (`our_pos[j]`: MMRec item j's row in ours).

    An item without a vector gets the mean of the present ones (MMRec's preprocessing rule; a zero
    row has no cosine). Returns (matrix float32, how many items got the mean).
    """
    x = np.asarray(x, dtype=np.float32)
    present = np.asarray(present, dtype=bool)
    if not present.any():
        raise ValueError("no item has a vector for this modality")
    rows = x[our_pos].copy()
    absent = ~present[our_pos]
    rows[absent] = x[present].mean(axis=0)
    return np.ascontiguousarray(rows, dtype=np.float32), int(absent.sum())


def unresolved(config: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """The hyper-parameter names whose config value is still a list (MMRec's grid, not one setting)."""
    return [n for n in names if isinstance(config.get(n), list | tuple)]


class BestEpochs:
    """The best epoch so far on each slice (`figures[slice][metric]`), with a copy of the weights.

    Strictly better only replaces (ties keep the earlier epoch, as MMRec's `early_stopping`); a
    non-finite value never counts. `snapshot` is called once per epoch that improves some slice.
    """

    def __init__(self, parts: Sequence[str], metric: str = MAIN) -> None:
        self.parts, self.metric = list(parts), metric
        self.best: dict[str, dict[str, Any]] = {}
        self.curve: list[dict[str, Any]] = []

    def value(self, part: str) -> float:
        b = self.best.get(part)
        return -math.inf if b is None else float(b["figures"][part][self.metric])

    def update(self, epoch: int, figures: Mapping[str, Mapping[str, Any]], snapshot: Callable[[], Any]) -> list[str]:
        values = {p: (figures.get(p) or {}).get(self.metric) for p in self.parts}
        self.curve.append({"epoch": epoch, **{p: v for p, v in values.items()}})
        improved = [p for p, v in values.items() if v is not None and math.isfinite(v) and v > self.value(p)]
        if improved:
            state = snapshot()
            for p in improved:
                self.best[p] = {"epoch": epoch, "figures": figures, "state": state}
        return improved


# --- MMRec ---------------------------------------------------------------------------------------


def require_mmrec(src: Path) -> SimpleNamespace:
    """Import MMRec's classes from a snapshot's `src/`, or raise PeerMissing saying what is missing."""
    code = Path(src) / "src"
    if not (code / "models" / "freedom.py").is_file():
        raise PeerMissing(f"{code}: no MMRec source (models/freedom.py) there; {INSTALL_HINT}")
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))  # MMRec imports its own top-level `utils`, `common`, `models`
    try:
        mods = {
            name: importlib.import_module(name)
            for name in ("utils.configurator", "utils.dataset", "utils.dataloader", "utils.utils", "common.trainer")
        }
    except ImportError as exc:
        raise PeerMissing(
            f"MMRec is not importable (missing package: {getattr(exc, 'name', None)!r}: {exc}); {INSTALL_HINT}"
        ) from exc
    return SimpleNamespace(
        code=code,
        Config=mods["utils.configurator"].Config,
        RecDataset=mods["utils.dataset"].RecDataset,
        TrainDataLoader=mods["utils.dataloader"].TrainDataLoader,
        EvalDataLoader=mods["utils.dataloader"].EvalDataLoader,
        Trainer=mods["common.trainer"].Trainer,
        init_seed=mods["utils.utils"].init_seed,
        get_model=mods["utils.utils"].get_model,
    )


def source_commit(src: Path) -> str | None:
    """The snapshot's commit: its COMMIT file (written beside an archive) or `git rev-parse HEAD`."""
    f = Path(src) / "COMMIT"
    if f.is_file():
        return f.read_text().strip() or None
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


@contextlib.contextmanager
def mmrec_compat() -> Iterator[None]:
    """What MMRec's model constructors need from the older torch/scipy they were written for.

    - LATTICE moves its content graphs with `.cuda()`: without CUDA that becomes a no-op.
    - FREEDOM and others fill a `scipy.sparse.dok_matrix` with `_update(dict)`, a private method
      scipy removed (1.13+); it was `dict.update` on the matrix's entries, which is what the stand-in
      does (on `_dict`, where newer scipy keeps them).
    - its evaluator's NDCG uses `np.float`, the alias of `float` numpy removed (1.24+).

    Both are undone on exit; nothing changes where the original exists.
    """
    import scipy.sparse as sp
    import torch

    undo: list[Callable[[], None]] = []
    if not torch.cuda.is_available():
        original = torch.Tensor.cuda
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
        undo.append(lambda: setattr(torch.Tensor, "cuda", original))
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = lambda self, data: self._dict.update(data)  # type: ignore[attr-defined]
        undo.append(lambda: delattr(sp.dok_matrix, "_update"))
    if "float" not in np.__dict__:
        np.float = float  # type: ignore[attr-defined]
        undo.append(lambda: delattr(np, "float"))
    try:
        yield
    finally:
        for fn in reversed(undo):
            fn()


def write_mmrec_data(
    folder: Path, name: str, split: Any, features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """`<folder>/<name>/<name>.inter` and the feature files; returns the id maps and what was filled."""
    parts = {p: df for p, df in split.frames.parts().items() if len(df)}
    users = mmrec_index(split.user_ids, pd.concat([df[USER_ID] for df in parts.values()]))
    items = mmrec_index(split.item_ids, pd.concat([df[ITEM_ID] for df in parts.values()]))
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    inter_frame(parts, users, items).to_csv(out / f"{name}.inter", sep="\t", index=False)
    our_pos = positions(list(items), {i: n for n, i in enumerate(split.item_ids)})
    filled = {}
    for modality, x in features.items():
        rows, filled[modality] = feature_rows(x, masks[modality], our_pos)
        np.save(out / FEATURE_FILES[modality], rows)
    return {"users": users, "items": items, "mean_filled": filled}


def mmrec_config(mm: SimpleNamespace, cls: str, name: str, folder: Path, values: Mapping[str, Any]) -> Any:
    """MMRec's Config (overall.yaml + model yaml, then `values`), with the dataset described inline."""
    config_dict = {
        "USER_ID_FIELD": "userID",
        "ITEM_ID_FIELD": "itemID",
        "inter_splitting_label": "x_label",
        "inter_file_name": f"{name}.inter",
        "vision_feature_file": FEATURE_FILES["image"],
        "text_feature_file": FEATURE_FILES["text"],
        "field_separator": "\t",
        "filter_out_cod_start_users": True,
        "data_path": str(folder) + os.sep,
        "use_gpu": False,
        "save_recommended_topk": False,
        **values,
    }
    with contextlib.chdir(mm.code):  # Config reads configs/*.yaml from the working directory
        config = mm.Config(cls, name, config_dict)
    left = unresolved(config.final_config_dict, [n for n in config["hyper_parameters"] if n != "seed"])
    if left:
        raise ValueError(f"{cls}: no single value for {left} (MMRec's grid lists); give them in --grid or --fixed")
    return config


def scored_trainer(trainer_cls: type) -> type:
    """MMRec's Trainer whose per-epoch validation is `on_epoch` (our evaluator), test skipped."""

    class ScoredTrainer(trainer_cls):  # type: ignore[misc, valid-type]
        def __init__(self, config: Any, model: Any, on_epoch: Callable[[int], dict[str, float]], stop_on: str):
            super().__init__(config, model)
            self.on_epoch, self.stop_on, self.epoch = on_epoch, stop_on, 0

        def _valid_epoch(self, valid_data: Any) -> tuple[float, dict[str, float]]:
            if valid_data is None:  # fit's per-epoch test evaluation: test is not looked at while training
                return 0.0, {}
            self.epoch += 1  # eval_step is 1: one call per epoch; epoch n = after n epochs of training
            values = self.on_epoch(self.epoch)
            return values[self.stop_on], {f"{p} {MAIN}": v for p, v in values.items()}

    return ScoredTrainer


def full_scores(model: Any, n_users: int) -> np.ndarray:
    """`full_sort_predict` for every MMRec user at once: (n_users, n_items)."""
    import torch

    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict([torch.arange(n_users, dtype=torch.long)])
    return scores.detach().cpu().numpy().astype(np.float64)


def epoch_scorer(
    label: str, model: Any, best: BestEpochs, slices: Any, n_users: int, user_pos: np.ndarray, item_pos: np.ndarray
) -> Callable[[int], dict[str, float]]:
    """The trainer's per-epoch validation: score `best.parts` with our evaluator, keep the best epochs."""
    clock = {"last": time.perf_counter()}

    def on_epoch(epoch: int) -> dict[str, float]:
        trained = time.perf_counter()
        scores = full_scores(model, n_users)
        figures = slices.score(peer_score_fn(lambda p: scores[p], user_pos, item_pos), best.parts)
        improved = best.update(epoch, figures, lambda: {k: v.detach().clone() for k, v in model.state_dict().items()})
        model.train()
        log.info(
            "%s epoch %d: %s (train %.1f s, score %.1f s)%s",
            label,
            epoch,
            ", ".join(f"{p} R@20 {figures[p][MAIN]:.4f}" for p in best.parts),
            trained - clock["last"],
            time.perf_counter() - trained,
            f"; best on {improved}" if improved else "",
        )
        clock["last"] = time.perf_counter()
        return {p: float(figures[p][MAIN]) for p in best.parts}

    return on_epoch


def run(args: argparse.Namespace) -> dict[str, Any]:
    mm = require_mmrec(args.mmrec_src)
    import torch

    torch.set_num_threads(args.threads)
    from mmrec.models.item_features import load_item_features

    wall = time.perf_counter()
    split = open_split(args.dataset, args.params, args.workspace, args.root, args.seed)
    slices, seed = split.slices, split.seed
    features, masks = load_item_features(split.ctx.paths, split.ctx.params.extract, split.item_ids, args.modalities)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="peers-mmrec-"))
    name = split.ctx.spec.name
    maps = write_mmrec_data(work, name, split, features, masks)
    user_pos = positions(split.user_ids, maps["users"])
    item_pos = positions(split.item_ids, maps["items"])
    n_users = len(maps["users"])
    parts = [p for p in SELECTABLE if p in slices.parts]
    log.info(
        "MMRec data in %s: %d users, %d items; mean-filled vectors %s",
        work / name,
        n_users,
        len(maps["items"]),
        maps["mean_filled"],
    )
    results: dict[str, Any] = {
        **split.header(),
        "mmrec": {"src": str(args.mmrec_src), "commit": source_commit(args.mmrec_src), "torch": torch.__version__},
        "modalities": list(args.modalities),
        "mean_filled_vectors": maps["mean_filled"],
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "stop_on": args.stop_on,
        "models": {},
    }
    for mname in args.models:
        cls = CLASSES[mname]
        grid = parse_grid(getattr(args, f"{mname}_grid"))
        fixed = parse_values(getattr(args, f"{mname}_fixed"))
        settings = grid_settings(grid)
        trials: list[dict[str, Any]] = []
        kept: list[tuple[Any, ...]] = []  # (config, model, trainer, best epochs, valid, train) per trial
        for t, setting in enumerate(settings):
            values = {**fixed, **setting, "seed": seed, "epochs": args.epochs, "stopping_step": args.stopping_step}
            config = mmrec_config(mm, cls, name, work, values)
            for cached in (work / name).glob("*.pt"):  # graphs MMRec caches per dataset folder: build afresh
                cached.unlink()
            dataset = mm.RecDataset(config)
            train_ds, valid_ds, _ = dataset.split()
            for ds in (dataset, train_ds, valid_ds):
                str(ds)  # sets inter_num, which the loaders read (MMRec's quick_start logs it first)
            train_data = mm.TrainDataLoader(config, train_ds, batch_size=config["train_batch_size"], shuffle=True)
            mm.init_seed(config["seed"])
            train_data.pretrain_setup()
            with mmrec_compat():
                model = mm.get_model(cls)(config, train_data).to(config["device"])
            best = BestEpochs(parts)
            on_epoch = epoch_scorer(f"{mname} trial {t + 1}", model, best, slices, n_users, user_pos, item_pos)
            trainer = scored_trainer(mm.Trainer)(config, model, on_epoch, args.stop_on)
            start = time.perf_counter()
            trainer.fit(train_data, valid_data=slices, test_data=None, saved=False, verbose=False)
            fit_s = time.perf_counter() - start
            trial = {
                "params": {**fixed, **setting},
                "epochs_run": len(best.curve),
                "fit_seconds": round(fit_s, 1),
                "best": {p: {"epoch": b["epoch"], **{q: b["figures"][q] for q in parts}} for p, b in best.best.items()},
                "curve": best.curve,
            }
            trials.append(trial)
            kept.append((config, model, trainer, best, valid_ds, train_ds))
            log.info(
                "%s trial %d/%d %s: %d epochs in %.0f s; best %s",
                mname,
                t + 1,
                len(settings),
                setting,
                len(best.curve),
                fit_s,
                {p: (b["epoch"], round(b["figures"][p][MAIN], 4)) for p, b in best.best.items()},
            )
        entry: dict[str, Any] = {"class": cls, "grid": grid, "fixed": fixed, "choices": {}, "trials": trials}
        tests = [] if args.valid_only else [p for p in ("test", "cold_test") if p in slices.parts]
        for part in args.select:
            if part not in parts:
                continue
            i = choose([{"selection": tr["best"].get(part, {}).get(part)} for tr in trials])
            config, model, trainer, best, valid_ds, train_ds = kept[i]
            chosen = best.best[part]
            model.load_state_dict(chosen["state"])
            scores = full_scores(model, n_users)
            fn = peer_score_fn(lambda p, s=scores: s[p], user_pos, item_pos)
            figures = slices.score(fn, [*parts, *tests])
            # cross-check: MMRec's own evaluator on its valid loader (train masked, all its items)
            with mmrec_compat():
                own = trainer.evaluate(
                    mm.EvalDataLoader(
                        config, valid_ds, additional_dataset=train_ds, batch_size=config["eval_batch_size"]
                    )
                )
            entry["choices"][part] = {
                "select": part,
                "chosen": {"params": trials[i]["params"], "epoch": chosen["epoch"], "trial": i},
                **figures,
                "mmrec_own_valid": {k: float(own[k]) for k in ("recall@20", "ndcg@20") if k in own},
            }
            log.info(
                "%s chosen on %s: %s epoch %d; valid R@20 ours %.4f, MMRec's own %.4f",
                mname,
                part,
                trials[i]["params"],
                chosen["epoch"],
                figures["valid"][MAIN],
                own.get("recall@20", float("nan")),
            )
        results["models"][mname] = entry
        kept.clear()
    if not args.work_dir and not args.keep_data:
        shutil.rmtree(work, ignore_errors=True)
    results["wall_seconds"] = round(time.perf_counter() - wall, 1)
    return results


def report(results: Mapping[str, Any]) -> str:
    """The table (one row per model and choice slice), then each trial's best epochs."""
    mm = results["mmrec"]
    lines = [
        f"split {results['split']['hash'][:12]} (warm {str(results['split'].get('warm_hash'))[:12]}), "
        f"MMRec {str(mm.get('commit'))[:12]} (torch {mm.get('torch')}), seed {results['seed']}, "
        f"epochs <= {results['epochs']} (stop on {results['stop_on']}), wall {results['wall_seconds']:.0f} s",
        *TABLE_HEAD,
    ]
    for e in results["models"].values():
        for part, c in e["choices"].items():
            lines.append(table_row(f"MMRec {e['class']} (epoch {c['chosen']['epoch']})", {**c, "select": part}))
    for name, e in results["models"].items():
        for part, c in e["choices"].items():
            own = c.get("mmrec_own_valid") or {}
            lines.append(
                f"{name} on {part}: {c['chosen']['params']} epoch {c['chosen']['epoch']}; valid R@20 "
                f"{fmt(c['valid'], MAIN)} (MMRec's own evaluator {fmt(own, MAIN)})"
            )
        for t in e["trials"]:
            best = "; ".join(
                f"best {p}: epoch {b['epoch']} (valid {fmt(b.get('valid'), MAIN)}, cold_valid "
                f"{fmt(b.get('cold_valid'), MAIN)})"
                for p, b in t["best"].items()
            )
            lines.append(f"  {t['params']}: {t['epochs_run']} epochs, {t['fit_seconds']:.0f} s; {best}")
    return "\n".join(lines)


def _slices(text: str) -> list[str]:
    out = [p for p in text.split(",") if p]
    bad = [p for p in out if p not in SELECTABLE]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"expected some of {list(SELECTABLE)}, got {text!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mmrec-src", required=True, type=Path, help="an MMRec snapshot (the folder holding src/)")

    def extra(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--epochs", type=int, default=80, help="MMRec's `epochs` (its default 1000)")
        ap.add_argument("--stopping-step", type=int, default=20, help="MMRec's early-stopping patience (epochs)")
        ap.add_argument("--stop-on", default="valid", choices=SELECTABLE, help="the slice early stopping follows")
        ap.add_argument(
            "--select",
            default="cold_valid,valid",
            type=_slices,
            help="slices that choose setting and epoch (one row each)",
        )
        ap.add_argument("--work-dir", default=None, help="where MMRec's input files go (default: a temporary folder)")
        ap.add_argument("--keep-data", action="store_true", help="keep the temporary MMRec input folder")

    add_split_arguments(ap, MODELS, DEFAULT_GRID, DEFAULT_FIXED, "MMRec", extra)
    return run_script(ap, argv, MODELS, run, report)


if __name__ == "__main__":
    sys.exit(main())
