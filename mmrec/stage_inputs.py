"""What the stages (and the tuning, ablation and tracking code they call) read from earlier stages.

The validated tables, the split, the models to train with their resolved parameters, the
metrics report, and the seeding every training run starts with. Kept apart from `mmrec.stages`
(which calls everything) so that the modules it calls can use these without importing it back.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mmrec.constants import ITEM_ID
from mmrec.context import StageContext
from mmrec.data.interactions import SplitData
from mmrec.data.splits import load_split
from mmrec.errors import ConfigError, StageError
from mmrec.models import available_models
from mmrec.models.modalities import feature_availability, resolve_all, uses_modalities, wanted_modalities
from mmrec.paths import DatasetPaths


def validated_table(ctx: StageContext, table: str) -> pd.DataFrame:
    """A validated table of the dataset (the validate stage's output), or a StageError saying to run it."""
    f = ctx.paths.validated_table(table)
    if not f.is_file():
        raise StageError(f"{f}: validated {table} table missing; run `mmrec stage validate` first")
    return pd.read_parquet(f)


def load_split_data(ctx: StageContext) -> SplitData:
    """The split of the run's kind, restricted to the validated items."""
    items = validated_table(ctx, "items")[ITEM_ID].astype(str)
    return load_split(ctx.paths, ctx.params.split.kind, items=items)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch: every training run (train, tune, ablation) starts the same way."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def model_names(ctx: StageContext, models: Sequence[str] | None) -> list[str]:
    """`models`, or `train.models` when None; a ConfigError names any unknown one."""
    names = list(models) if models else list(ctx.params.train.models)
    unknown = [m for m in names if m not in available_models()]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown} in train.models; available: {available_models()}")
    return names


def resolved_model_params(
    ctx: StageContext, names: Sequence[str], item_ids: Sequence[str] | np.ndarray
) -> dict[str, dict[str, Any]]:
    """`train.params` of each model with its modalities narrowed to what the dataset has
    (`mmrec.models.modalities`): a text+image catalogue trains the multimodal models on text and
    images, with one log line per model saying what was dropped and why."""
    by_model = ctx.params.train.params
    if not uses_modalities(names, by_model):
        return {n: dict(by_model.get(n, {})) for n in names}
    wanted = {m for n in names for m in wanted_modalities(n, by_model.get(n, {})) or ()}
    available = feature_availability(ctx.spec, ctx.paths, ctx.params.extract, list(item_ids), wanted)
    return resolve_all(names, by_model, available)


def read_metrics(paths: DatasetPaths) -> dict[str, Any]:
    """The evaluate stage's report (`reports/<name>/metrics.json`), or a StageError saying to run it."""
    if not paths.metrics.is_file():
        raise StageError(f"{paths.metrics}: no metrics yet; run `mmrec stage evaluate` first")
    return json.loads(paths.metrics.read_text())
