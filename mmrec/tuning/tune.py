"""`mmrec tune`: a bounded Optuna search per model on validation data only, written to the
dataset's parameter overlay (`params/<name>.yaml`) that `pipeline`, `evaluate` and `dvc repro`
merge over params.yaml.

- Sampler: TPE, seeded (`tune.seed`), so a search with the same budget and data proposes the same
  trials. Trial 0 is the current configuration (params.yaml + the dataset's overlays) when it
  lies inside the space, so a search never leaves the dataset with worse validation figures
  than it had, and a repeated search starts from the previous result. Pruner: median pruning on the per-epoch validation curve: every validation check of the
  training loop (`mmrec.models.training.evaluation_callback`) is reported to the trial, and a
  trial below the median of the earlier trials at the same epoch stops there.
- Objective: validation only (`tune.objective`): warm validation Recall@20, the cold-valid slice
  (newest items held out, `cold_valid.tsv`), or a weighted combination. The tuner drops the test
  and cold-test matrices from the split it holds before any trial runs, so no trial can read them.
- Every trial is an MLflow run nested under one run per model (`tune.track`), with its
  parameters, validation curve, value and state (complete / pruned / failed).
- Output: the chosen values of each tuned model in `params/<name>.yaml` (atomic; other models'
  sections and keys kept; a header comment records trials, best value and budget), and
  `reports/<name>/tuning/`: tuning.json, tuning.md, and per model the optimisation history plot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import scipy.sparse as sp
import yaml

from mmrec import evaluate  # module attribute access: the test-leak check spies on evaluate.user_metrics
from mmrec.cold import cold_summary, tied_users
from mmrec.config import TUNED_PARAMS_DIR, deep_merge, read_yaml_mapping
from mmrec.errors import ConfigError, DataError
from mmrec.io import write_json, write_text
from mmrec.models import create_model
from mmrec.models.item_features import load_item_features, modalities_of, with_features
from mmrec.models.registry import get_model_class
from mmrec.models.training import TrainingPruned, evaluation_callback
from mmrec.params.tracking import tracking_params
from mmrec.stage_inputs import load_split_data, model_names, resolved_model_params, seed_everything
from mmrec.tracking.store import experiment_id, experiment_name, mlflow_client, mlflow_key, resolve_uri
from mmrec.tuning.spaces import Choice, Dimension, FloatRange, IntRange, search_space, tunable_models

if TYPE_CHECKING:
    import optuna

    from mmrec.data.interactions import SplitData
    from mmrec.stages import StageContext
    from mmrec.tuning.params import TuneParams

log = logging.getLogger(__name__)

OBJECTIVE_K = 20
#: the header line prefix that records one model's search in the overlay
HEADER_PREFIX = "# tuned "


def overlay_path(ctx: StageContext) -> Path:
    """`<workspace>/params/<name>.yaml`: the overlay `mmrec.config.dataset_params_files` reads last."""
    return Path(ctx.workspace) / TUNED_PARAMS_DIR / f"{ctx.spec.name}.yaml"


def tuning_dir(ctx: StageContext) -> Path:
    return ctx.paths.reports / "tuning"


def validation_only(data: SplitData) -> SplitData:
    """The split without its test parts: what every trial sees (test is touched once, in evaluate)."""
    empty = sp.csr_matrix(data.valid.shape, dtype=np.float32)
    return dataclasses.replace(
        data,
        test=empty,
        cold_test=None if data.cold_test is None else empty.copy(),
        cold_items=np.zeros(0, dtype=np.int64),
    )


def suggest(trial: optuna.Trial, name: str, dim: Dimension) -> Any:
    """One value of `dim` from the trial (the declarative space -> Optuna's suggest API)."""
    if isinstance(dim, FloatRange):
        return trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    if isinstance(dim, IntRange):
        return trial.suggest_int(name, dim.low, dim.high, step=dim.step, log=dim.log)
    if isinstance(dim, Choice):
        return trial.suggest_categorical(name, list(dim.values))
    raise ConfigError(f"{name}: unknown search dimension {dim!r}")  # pragma: no cover - parse_dimension forbids it


@dataclasses.dataclass
class _Tracker:
    """MLflow logging of one search (a parent run per model, a nested run per trial); inert when off."""

    ctx: StageContext
    enabled: bool
    _stack: Any = None
    _uri: str = ""
    _exp: str = ""

    def __enter__(self) -> Self:
        if not self.enabled:
            return self
        import contextlib

        tp = tracking_params(self.ctx.params)
        self._uri = resolve_uri(tp, self.ctx.workspace)
        self._stack = contextlib.ExitStack()
        client = self._stack.enter_context(mlflow_client(self._uri))
        self._exp = experiment_id(client, experiment_name(self.ctx.spec.name), self._uri, tp, self.ctx.workspace)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self._stack.close()

    def run(self, name: str, nested: bool = False) -> Any:
        import contextlib

        if not self.enabled:
            return contextlib.nullcontext()
        import mlflow

        return mlflow.start_run(experiment_id=self._exp, run_name=name, nested=nested)

    def params(self, values: Mapping[str, Any]) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_params({k: str(v)[:500] for k, v in values.items()})

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        if self.enabled and value is not None and math.isfinite(value):
            import mlflow

            mlflow.log_metric(mlflow_key(key), float(value), step=step)

    def tags(self, values: Mapping[str, Any]) -> None:
        if self.enabled:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in values.items()})

    def artifact(self, path: Path) -> None:
        if self.enabled and path.is_file():
            import mlflow

            mlflow.log_artifact(str(path))

    @property
    def uri(self) -> str | None:
        return self._uri or None


class Tuner:
    """The search of one dataset: its split (validation parts only), features and settings.

    Args:
        ctx: the run's stage context (params already merged with the dataset's overlays).
        tune: the search settings (default: `ctx.params.tune`).
        pruner: an Optuna pruner replacing the median pruner (tests; special searches).
    """

    def __init__(self, ctx: StageContext, tune: TuneParams | None = None, pruner: Any = None) -> None:
        self.ctx = ctx
        self.tune = tune or ctx.params.tune
        self.pruner = pruner
        full = load_split_data(ctx)
        self.split_hash = full.split_hash
        self.data = validation_only(full)
        del full
        if self.tune.objective != "valid" and (self.data.cold_valid is None or self.data.cold_valid.nnz == 0):
            raise DataError(
                f"tune.objective={self.tune.objective!r} needs the cold-valid slice, but split "
                f"{ctx.paths.splits(ctx.params.split.kind)} has none; set split.cold_item_fraction > 0 and "
                "split.cold_valid_fraction > 0 and re-run `mmrec stage split`, or use tune.objective: valid"
            )
        self._check_cold_slice_size(ctx)
        self._features: dict[str, tuple[Any, Any]] = {}

    def _check_cold_slice_size(self, ctx: StageContext) -> None:
        """A cold-valid slice of at most OBJECTIVE_K items is ranked whole by Recall@K, so every
        trial scores 1.0 on it: a `cold_valid` search would choose among ties (on the synthetic
        shop's 12 cold-valid items it spent 18 minutes doing that). Refuse it; for `combined`
        the cold part is a constant, so the search is the warm one: say so."""
        n = len(self.data.cold_valid_items) if self.data.cold_valid is not None else 0
        if self.tune.objective == "valid" or n == 0 or n > OBJECTIVE_K:
            return
        why = (
            f"the cold-valid slice of {ctx.paths.splits(ctx.params.split.kind)} has {n} items, and "
            f"Recall@{OBJECTIVE_K} over {n} candidates is 1.0 for every model"
        )
        if self.tune.objective == "cold_valid":
            raise DataError(
                f"tune.objective='cold_valid' cannot tell trials apart: {why}; raise split.cold_item_fraction "
                f"(more than {2 * OBJECTIVE_K} cold items with cold_valid_fraction 0.5) and re-run "
                "`mmrec stage split`, or use tune.objective: valid"
            )
        log.warning(
            "tune.objective=%r: %s, so only the warm part of the objective ranks trials", self.tune.objective, why
        )

    # -- data ----------------------------------------------------------------------------------
    def _train_set(self, model: Any) -> Any:
        needed = sorted(modalities_of(model))
        if not needed:
            return self.data.train
        missing = [m for m in needed if m not in self._features]
        if missing:
            feats, masks = load_item_features(self.ctx.paths, self.ctx.params.extract, self.data.item_ids, missing)
            for m in missing:
                self._features[m] = (feats[m], masks[m])
        return with_features(
            self.data.train, {m: self._features[m][0] for m in needed}, {m: self._features[m][1] for m in needed}
        )

    def score(self, model: Any) -> dict[str, float]:
        """The fitted model's validation figures: valid (and cold_valid when the split has it) Recall@20.

        cold_valid gets no credit from tie-breaks (mmrec/cold.py), as the cold test in evaluate:
        otherwise a model that cannot score new items would be tuned on its tie order.
        """
        train = self.data.train.matrix
        k = min(OBJECTIVE_K, train.shape[1])
        out = {"valid": float(evaluate.evaluate_scores(model.score, self.data.valid, train, ks=(k,))[f"recall@{k}"])}
        cv = self.data.cold_valid
        if cv is not None and cv.nnz and len(self.data.cold_valid_items):
            kc = min(OBJECTIVE_K, len(self.data.cold_valid_items))
            um = evaluate.user_metrics(model.score, cv, train, ks=(kc,), candidates=self.data.cold_valid_items)
            tied = tied_users(model.score, um.users, self.data.cold_valid_items)
            out["cold_valid"] = float(cold_summary(um, tied, (kc,))[1][f"recall@{kc}"])
        return out

    def objective_value(self, figures: Mapping[str, float]) -> float:
        t = self.tune
        if t.objective == "valid":
            return figures["valid"]
        if t.objective == "cold_valid":
            return figures["cold_valid"]
        return (1.0 - t.cold_weight) * figures["valid"] + t.cold_weight * figures["cold_valid"]

    # -- search ----------------------------------------------------------------------------------
    def tune_model(self, name: str, trials: int, timeout: float | None, tracker: _Tracker) -> dict[str, Any]:
        """Search one model; returns its record (best trial, every trial, importances, budget)."""
        import optuna

        space = search_space(name, self.tune.spaces)
        base = resolved_model_params(self.ctx, [name], [str(i) for i in self.data.item_ids])[name]
        sampler = optuna.samplers.TPESampler(seed=self.tune.seed)
        # pruning follows the warm validation curve; with a cold objective that curve is not the
        # objective, so nothing is pruned (every trial is scored on what it is chosen for)
        pruner = self.pruner or (
            optuna.pruners.MedianPruner(
                n_startup_trials=self.tune.startup_trials, n_warmup_steps=self.tune.warmup_epochs
            )
            if self.tune.objective == "valid"
            else optuna.pruners.NopPruner()
        )
        study = optuna.create_study(
            direction="maximize", sampler=sampler, pruner=pruner, study_name=f"{self.ctx.spec.name}-{name}"
        )
        current = current_values(name, space, base)
        if current is not None:  # trial 0 = today's settings: the search never ends below them
            study.enqueue_trial(current)
        records: list[dict[str, Any]] = []

        def objective(trial: optuna.Trial) -> float:
            sampled = {p: suggest(trial, p, dim) for p, dim in space.items()}
            params = {**base, **sampled}
            model = create_model(name, **params)
            train = self._train_set(model)
            curve: list[tuple[int, float]] = []
            rec: dict[str, Any] = {"number": trial.number, "params": sampled, "state": "running"}
            records.append(rec)
            started = time.perf_counter()
            with tracker.run(f"trial-{trial.number}", nested=True):
                tracker.params(sampled)
                tracker.tags({"mmrec.kind": "tuning-trial", "mmrec.model": name, "mmrec.trial": trial.number})

                def on_check(epoch: int, value: float) -> None:
                    curve.append((epoch, value))
                    tracker.metric("valid_recall@20", value, step=epoch)
                    trial.report(value, epoch)
                    if trial.should_prune():
                        raise TrainingPruned(epoch, value)

                seed_everything(self.ctx.params.train.seed)
                try:
                    with evaluation_callback(on_check):
                        model.fit(train, self.data.valid)
                except TrainingPruned as exc:
                    rec.update(
                        state="pruned",
                        epoch=exc.epoch,
                        value=exc.value,
                        curve=curve,
                        seconds=round(time.perf_counter() - started, 3),
                    )
                    tracker.tags({"mmrec.state": "pruned", "mmrec.pruned_at_epoch": exc.epoch})
                    log.info(
                        "%s trial %d pruned at epoch %d (valid recall@20 %.4f)",
                        name,
                        trial.number,
                        exc.epoch,
                        exc.value,
                    )
                    raise optuna.TrialPruned(str(exc)) from None
                figures = self.score(model)
                value = self.objective_value(figures)
                rec.update(
                    state="complete",
                    value=value,
                    figures=figures,
                    curve=curve,
                    epochs=model.epochs,
                    best_epoch=model.best_epoch,
                    seconds=round(time.perf_counter() - started, 3),
                )
                for key, v in figures.items():
                    tracker.metric(f"{key}_recall@20", v)
                tracker.metric("objective", value)
                tracker.tags({"mmrec.state": "complete"})
                log.info(
                    "%s trial %d: %s = %.4f (%s) in %.1fs",
                    name,
                    trial.number,
                    self.tune.objective,
                    value,
                    ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sampled.items()),
                    rec["seconds"],
                )
                return value

        started = time.perf_counter()
        with tracker.run(f"tune-{name}"):
            tracker.tags(
                {
                    "mmrec.kind": "tuning",
                    "mmrec.model": name,
                    "mmrec.split_hash": self.split_hash,
                    "mmrec.objective": self.tune.objective,
                }
            )
            tracker.params(
                {
                    "trials": trials,
                    "timeout_seconds": timeout,
                    "objective": self.tune.objective,
                    "sampler": f"TPE(seed={self.tune.seed})",
                    "pruner": type(pruner).__name__,
                    **{f"space.{p}": d for p, d in space.items()},
                }
            )
            study.optimize(objective, n_trials=trials, timeout=timeout, catch=())
            search_seconds = time.perf_counter() - started
            confirmation = self._confirm(name, study, base, tracker)
            seconds = time.perf_counter() - started
            record = self._record(name, study, records, space, base, trials, timeout, seconds)
            # what `--timeout` bounds: the search, not the confirmation fits after it
            record["budget"]["search_seconds"] = round(search_seconds, 1)
            if confirmation:
                _choose_confirmed(record, confirmation, self.ctx.params.train.seed)
            if record.get("best"):
                tracker.metric("best_objective", record["best"]["value"])
                tracker.params({f"best.{k}": v for k, v in record["best"]["params"].items()})
            plot = self._plot(name, study, record)
            record["plot"] = str(plot) if plot else None
            if plot:
                tracker.artifact(plot)
        return record

    def _confirm(
        self, name: str, study: optuna.Study, base: Mapping[str, Any], tracker: _Tracker
    ) -> list[dict[str, Any]]:
        """Retrain the `tune.confirm_top` best distinct complete trials with `tune.confirm_seeds` more seeds.

        Only trials within `tune.confirm_within` of the best value are candidates. Returns one row
        per confirmed trial: {number, params, seeds, values, mean, std}, the first value being the
        trial's own (seed `train.seed`). Empty when off, when the model is not epoch-trained
        (deterministic: more seeds give the same value) or when fewer than two distinct trials
        are close enough to the best (nothing to choose between).
        """

        from mmrec.models import create_model
        from mmrec.models.registry import get_model_class
        from mmrec.stages import seed_everything

        t = self.tune
        # epoch-trained models (they take max_epochs) are the ones whose result the seed decides;
        # the closed-form ones (item-KNN, content-KNN) accept a seed but ignore it
        takes = set(get_model_class(name).param_names())
        if t.confirm_top < 1 or not {"seed", "max_epochs"} <= takes:
            return []
        top = confirmation_candidates(study.trials, t.confirm_top, t.confirm_within)
        if len(top) < 2:
            return []
        base_seed = int(self.ctx.params.train.seed)
        seeds = [base_seed + i for i in range(1, t.confirm_seeds + 1)]
        rows: list[dict[str, Any]] = []
        for tr in top:
            values = [float(tr.value or 0.0)]
            for seed in seeds:
                model = create_model(name, **{**base, **tr.params, "seed": seed})
                train = self._train_set(model)
                started = time.perf_counter()
                with tracker.run(f"confirm-{tr.number}-seed{seed}", nested=True):
                    tracker.params({**tr.params, "seed": seed})
                    tracker.tags({"mmrec.kind": "tuning-confirmation", "mmrec.model": name, "mmrec.trial": tr.number})
                    seed_everything(seed)
                    model.fit(train, self.data.valid)
                    value = self.objective_value(self.score(model))
                    tracker.metric("objective", value)
                values.append(value)
                log.info(
                    "%s trial %d, seed %d: %s = %.4f in %.1fs",
                    name,
                    tr.number,
                    seed,
                    t.objective,
                    value,
                    time.perf_counter() - started,
                )
            rows.append(
                {
                    "number": tr.number,
                    "params": dict(tr.params),
                    "seeds": [base_seed, *seeds],
                    "values": values,
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values)),
                }
            )
        return rows

    def _record(
        self,
        name: str,
        study: optuna.Study,
        records: list[dict[str, Any]],
        space: Mapping[str, Dimension],
        base: Mapping[str, Any],
        trials: int,
        timeout: float | None,
        seconds: float,
    ) -> dict[str, Any]:
        import optuna

        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
        record: dict[str, Any] = {
            "model": name,
            "objective": self.tune.objective,
            "budget": {"trials": trials, "timeout_seconds": timeout, "seconds": round(seconds, 1)},
            "trials": {"run": len(study.trials), "complete": len(complete), "pruned": len(pruned)},
            "space": {p: dataclasses.asdict(d) | {"type": type(d).__name__} for p, d in space.items()},
            "fixed": {k: v for k, v in base.items() if k not in space},
            "history": records,
        }
        if not complete:
            record["best"] = None
            record["note"] = "no trial completed (all pruned or the budget ended first): nothing written for this model"
            return record
        best = study.best_trial
        best_rec = next((r for r in records if r["number"] == best.number), {})
        record["best"] = {
            "number": best.number,
            "value": float(study.best_value),
            "params": dict(best.params),
            "figures": best_rec.get("figures", {}),
            "best_epoch": best_rec.get("best_epoch"),
        }
        try:
            if len(complete) >= 2:
                import warnings

                with warnings.catch_warnings():  # "importances will be equal" on flat searches: noted below
                    warnings.simplefilter("ignore")
                    imp = optuna.importance.get_param_importances(study)
                record["importance"] = {k: round(float(v), 4) for k, v in imp.items()}
            else:
                record["importance_note"] = "needs at least two completed trials"
        except (RuntimeError, ValueError) as exc:  # e.g. every completed trial has the same value
            record["importance_note"] = f"not computable: {exc}"
        return record

    def _plot(self, name: str, study: optuna.Study, record: Mapping[str, Any]) -> Path | None:
        """Optimisation history: each trial's value (pruned ones at their last reported value), best so far."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [(r["number"], r.get("value"), r["state"]) for r in record["history"] if r.get("value") is not None]
        if not rows:
            return None
        path = tuning_dir(self.ctx) / f"{name}_history.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        done = [(n, v) for n, v, s in rows if s == "complete"]
        cut = [(n, v) for n, v, s in rows if s == "pruned"]
        if done:
            ax.scatter([n for n, _ in done], [v for _, v in done], s=18, label="complete", color="tab:blue")
            best, xs, ys = -np.inf, [], []
            for n, v in sorted(done):
                best = max(best, v)
                xs.append(n)
                ys.append(best)
            ax.step(xs, ys, where="post", color="tab:red", label="best so far")
        if cut:
            ax.scatter(
                [n for n, _ in cut],
                [v for _, v in cut],
                s=18,
                marker="x",
                color="tab:gray",
                label="pruned (last check)",
            )
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{self.tune.objective} recall@{OBJECTIVE_K}")
        ax.set_title(f"{self.ctx.spec.name}: {name} search ({record['trials']['run']} trials)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        tmp.replace(path)
        return path


def in_space(dim: Dimension, value: Any) -> bool:
    if isinstance(dim, Choice):
        return value in dim.values
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(dim, IntRange) and (int(value) != value or (value - dim.low) % dim.step):
        return False
    return dim.low <= value <= dim.high


def current_values(name: str, space: Mapping[str, Dimension], base: Mapping[str, Any]) -> dict[str, Any] | None:
    """The values the pipeline would train `name` with now (params + overlays, else the class
    defaults) for the searched arguments; None when one lies outside the space (not enqueued)."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(get_model_class(name).__init__).parameters.items()}
    values = {p: base.get(p, defaults.get(p)) for p in space}
    return values if all(in_space(space[p], v) for p, v in values.items()) else None


def confirmation_candidates(trials: Sequence[Any], top: int, within: float) -> list[Any]:
    """The `top` best complete trials with distinct parameters, best first, among those within
    `within` (a fraction) of the best value: the ones a seed confirmation could still choose."""
    import optuna

    complete = sorted(
        (tr for tr in trials if tr.state == optuna.trial.TrialState.COMPLETE),
        key=lambda tr: (-float(tr.value or 0.0), tr.number),
    )
    if not complete:
        return []
    floor = float(complete[0].value or 0.0) * (1.0 - within)
    chosen: list[Any] = []
    seen: set[str] = set()
    for tr in complete:
        if float(tr.value or 0.0) < floor or len(chosen) == top:
            break  # sorted best first: the rest are further below
        key = json.dumps(tr.params, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            chosen.append(tr)
    return chosen


def _choose_confirmed(record: dict[str, Any], confirmation: list[dict[str, Any]], seed: int) -> None:
    """Make the confirmed trial with the best mean the record's best (ties: the earlier trial).

    `best.value` becomes that mean (what was chosen on); the single-seed value is kept as
    `best.single_seed_value`, the per-seed values as `best.values`.
    """
    chosen = max(confirmation, key=lambda r: (r["mean"], -r["number"]))
    rec: dict[str, Any] = next((h for h in record["history"] if h["number"] == chosen["number"]), {})
    record["confirmation"] = confirmation
    record["best"] = {
        "number": chosen["number"],
        "value": chosen["mean"],
        "params": dict(chosen["params"]),
        "figures": rec.get("figures", {}),
        "best_epoch": rec.get("best_epoch"),
        "single_seed_value": chosen["values"][0],
        "values": chosen["values"],
        "seeds": chosen["seeds"],
        "chosen_by": f"mean of {len(chosen['seeds'])} seeds over the {len(confirmation)} best trials",
    }


# -- overlay ----------------------------------------------------------------------------------------


def _header(records: Mapping[str, Mapping[str, Any]], keep: Sequence[str], dataset: str, split_hash: str) -> str:
    lines = [
        f"# Parameter overlay of dataset {dataset!r}, merged over params.yaml by every command on it",
        '# (README "Your own data" -> Parameter files). Written by `mmrec tune`: the values below were',
        "# chosen on VALIDATION data only (never test); edit freely, a new search of a model replaces",
        "# that model's searched keys and keeps everything else.",
    ]
    lines += list(keep)
    for name, rec in records.items():
        best = rec.get("best")
        if not best:
            continue
        b = rec["budget"]
        timeout = _seconds(b["timeout_seconds"])
        how = f"mean of {len(best['seeds'])} seeds, " if best.get("seeds") else ""
        lines.append(
            f"{HEADER_PREFIX}{name}: {rec['objective']} recall@{OBJECTIVE_K} {best['value']:.4f} ({how}trial {best['number']}); "
            f"{rec['trials']['run']} trials ({rec['trials']['complete']} complete, {rec['trials']['pruned']} pruned) "
            f"in {b['seconds'] / 60:.1f} min (budget: {b['trials']} trials, timeout {timeout}); split {split_hash[:12]}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        )
    return "\n".join(lines) + "\n"


def write_overlay(
    path: Path,
    chosen: Mapping[str, Mapping[str, Any]],
    records: Mapping[str, Mapping[str, Any]],
    dataset: str,
    split_hash: str,
) -> dict[str, Any]:
    """Merge `chosen` (model -> searched values) into the overlay at `path`, atomically.

    Every other key of the file is kept (other models, other sections, keys of a tuned model
    that were not searched); the header keeps the records of models not searched this time.
    """
    existing: dict[str, Any] = {}
    keep: list[str] = []
    if path.is_file():
        existing = read_yaml_mapping(path)
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(HEADER_PREFIX):
                model = line[len(HEADER_PREFIX) :].split(":", 1)[0]
                if model not in chosen:
                    keep.append(line)
    merged = deep_merge(existing, {"train": {"params": {m: dict(v) for m, v in chosen.items()}}})
    body = yaml.safe_dump(_plain(merged), sort_keys=False, default_flow_style=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, _header(records, keep, dataset, split_hash) + body)
    return merged


def _plain(obj: Any) -> Any:
    """Python scalars for YAML (numpy and Optuna values), floats rounded to 6 significant digits."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(f"{float(obj):.6g}")
    return obj


# -- entry point ----------------------------------------------------------------------------------


def run_tune(
    ctx: StageContext,
    models: Sequence[str] | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    objective: str | None = None,
    pruner: Any = None,
    track: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Search every requested model on validation and write the overlay and the report.

    Args:
        models: models to tune (default: `tune.models`, else every model of `train.models` that
            has a search space).
        trials/timeout/objective/track: override `tune.trials`, `tune.timeout_seconds`,
            `tune.objective`, `tune.track` for this run.
        pruner: an Optuna pruner replacing the median pruner.

    Returns:
        {"dataset", "split_hash", "overlay", "report", "models": {name: record}}.
    """
    t = ctx.params.tune
    update: dict[str, Any] = {}
    if trials is not None:
        update["trials"] = trials
    if timeout is not None:
        update["timeout_seconds"] = timeout
    if objective is not None:
        update["objective"] = objective
    if track is not None:
        update["track"] = track
    tune = type(t).model_validate({**t.model_dump(), **update})

    names = model_names(ctx, list(models) if models else (tune.models or None))
    names = tunable_models(names, tune.spaces)
    if not names:
        raise ConfigError("nothing to tune: none of the models has a search space (popularity has no hyper-parameters)")
    _quiet_optuna()
    tuner = Tuner(ctx, tune, pruner)
    records: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    # one line per trial from here, not one per validation check of every trial
    train_log = logging.getLogger("mmrec.models.training")
    level = train_log.level
    if train_log.getEffectiveLevel() <= logging.INFO:
        train_log.setLevel(logging.WARNING)
    with _Tracker(ctx, tune.track) as tracker, _restore_level(train_log, level):
        searched = 0.0  # seconds of search so far: confirmation fits are outside the timeout
        for i, name in enumerate(names):
            budget = None
            if tune.timeout_seconds is not None:
                budget = max(tune.timeout_seconds - searched, 1.0) / (len(names) - i)
            log.info(
                "tuning %s: up to %d trials%s, objective %s",
                name,
                tune.trials,
                f", {budget:.0f} s" if budget else "",
                tune.objective,
            )
            records[name] = tuner.tune_model(name, tune.trials, budget, tracker)
            searched += records[name]["budget"]["search_seconds"]
            if progress:
                progress(name)
        uri = tracker.uri
    chosen = {n: r["best"]["params"] for n, r in records.items() if r.get("best")}
    path = overlay_path(ctx)
    if chosen:
        write_overlay(path, chosen, records, ctx.spec.name, tuner.split_hash)
    result = {
        "dataset": ctx.spec.name,
        "split_hash": tuner.split_hash,
        "objective": tune.objective,
        "overlay": str(path) if chosen else None,
        "tracking_uri": uri,
        "seconds": round(time.perf_counter() - started, 1),
        "models": records,
    }
    out = tuning_dir(ctx)
    _merge_json(out / "tuning.json", result)
    write_text(out / "tuning.md", format_tuning_markdown(result))
    result["report"] = str(out / "tuning.md")
    return result


@contextlib.contextmanager
def _restore_level(logger: logging.Logger, level: int) -> Iterator[None]:
    try:
        yield
    finally:
        logger.setLevel(level)


def _merge_json(path: Path, result: dict[str, Any]) -> None:
    """tuning.json keeps earlier searches of other models on the same split."""
    merged = dict(result)
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if old.get("split_hash") == result["split_hash"]:
            merged["models"] = {**old.get("models", {}), **result["models"]}
    write_json(path, merged)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from us


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f} s"


def format_tuning_markdown(result: Mapping[str, Any]) -> str:
    out = [
        f"# Tuning: {result['dataset']}",
        "",
        (
            f"Split hash `{result['split_hash'][:12]}`; objective `{result['objective']}` (validation only; the "
            f"test set is never read). Chosen values written to `{result['overlay']}`."
        ),
        "",
    ]
    for name, rec in result["models"].items():
        b, n = rec["budget"], rec["trials"]
        out += [
            f"## {name}",
            "",
            (
                f"{n['run']} trials ({n['complete']} complete, {n['pruned']} pruned) in {b['seconds'] / 60:.1f} min; "
                f"budget {b['trials']} trials, timeout {_seconds(b['timeout_seconds'])}."
            ),
            "",
        ]
        best = rec.get("best")
        if not best:
            out += [rec.get("note", "no best trial"), ""]
            continue
        figures = ", ".join(f"{k} recall@{OBJECTIVE_K} {v:.4f}" for k, v in best["figures"].items())
        out += [
            (
                f"Best trial {best['number']}: objective **{best['value']:.4f}** ({figures}), best epoch "
                f"{best.get('best_epoch')}."
            ),
            "",
            "| parameter | chosen | importance |",
            "|---|---|---|",
        ]
        imp = rec.get("importance", {})
        for p, v in best["params"].items():
            shown = f"{v:.4g}" if isinstance(v, float) else str(v)
            out.append(f"| {p} | {shown} | {imp.get(p, float('nan')):.3f} |")
        if rec.get("importance_note"):
            out += ["", f"Importance: {rec['importance_note']}."]
        if rec.get("confirmation"):
            out += [
                "",
                f"Chosen by {best['chosen_by']} (single-seed near-ties are noise):",
                "",
                "| trial | seeds | values | mean | std |",
                "|---|---|---|---|---|",
            ]
            for row in rec["confirmation"]:
                vals = ", ".join(f"{v:.4f}" for v in row["values"])
                out.append(f"| {row['number']} | {row['seeds']} | {vals} | {row['mean']:.4f} | {row['std']:.4f} |")
        if rec.get("plot"):
            out += ["", f"![{name} history]({Path(rec['plot']).name})"]
        out.append("")
    return "\n".join(out)
