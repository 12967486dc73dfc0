"""The `tune:` section of params.yaml (what `mmrec tune`, the DVC `tune` stage and
`mmrec pipeline --tune` read)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmrec.constants import SEED


class TuneParams(BaseModel):
    """A bounded search on validation.

    Attributes:
        models: models to tune; empty: every model of `train.models` that has a search space.
        trials: trials per model (the search also stops at `timeout_seconds`).
        timeout_seconds: wall-clock budget of the whole search (all models), shared out evenly
            among the models still to tune; None: only `trials` bounds it. A trial already
            running is finished, so the search may overrun by one trial.
        objective: what a trial is scored on, always validation data, never test:
            `valid` (warm validation Recall@20), `cold_valid` (Recall@20 on the cold-valid slice,
            only the cold-valid items ranked: for cold-start settings), or `combined`
            ((1 - cold_weight) * valid + cold_weight * cold_valid).
        cold_weight: the weight of cold_valid in `combined`.
        seed: seed of the TPE sampler (the models train with `train.seed`).
        startup_trials: trials completed before the median pruner may prune (MedianPruner
            n_startup_trials).
        warmup_epochs: epochs of a trial before it may be pruned (MedianPruner n_warmup_steps).
        spaces: per model, dimensions replacing or extending the declared search space
            (mmrec/tuning/spaces.py), e.g. `lightgcn: {lr: {low: 0.001, high: 0.05, log: true}}`.
        track: log every trial as an MLflow run nested under one run per model.
        confirm_top: after the search, retrain the this many best distinct trials with
            `confirm_seeds` more seeds (train.seed + 1, + 2, ...) and choose the best MEAN
            validation value instead of the best single run. On a small validation set two
            settings a few 1e-4 apart are a tie that the training seed decides (ml100k-mm: the
            shipped and the tuned LightGCN .2237 vs .2237 on validation, .2004 vs .1891 on test);
            the mean of a few seeds is the honest tie-break. 0: off (the best single trial).
            Closed-form models (item-KNN, content-KNN) are deterministic and skip it. Costs
            confirm_top x confirm_seeds extra fits after the search, outside `timeout_seconds`.
        confirm_seeds: extra seeds per confirmed trial.
        confirm_within: only trials within this fraction of the best single-seed value are
            confirmed (0.05: at least 95% of it). Seeds move ml100k-mm's LightGCN by ~1%, so a
            trial 45% below the best (an mm_graph TPE start-up trial there: .121 against .226)
            cannot win on the mean, and its fits (minutes each) would be wasted.
    """

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=list)
    trials: int = Field(20, ge=1)
    timeout_seconds: float | None = Field(None, gt=0)
    objective: Literal["valid", "cold_valid", "combined"] = "valid"
    cold_weight: float = Field(0.5, ge=0.0, le=1.0)
    seed: int = SEED
    startup_trials: int = Field(5, ge=0)
    warmup_epochs: int = Field(10, ge=0)
    spaces: dict[str, dict[str, Any]] = Field(default_factory=dict)
    track: bool = True
    confirm_top: int = Field(0, ge=0)
    confirm_seeds: int = Field(2, ge=1)
    confirm_within: float = Field(0.05, ge=0.0, le=1.0)
