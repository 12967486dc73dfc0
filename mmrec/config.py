"""Typed settings: `params.yaml` (one namespace per stage) plus environment overrides.

`params.yaml` is what DVC tracks, so every tunable lives there; an environment variable
`MMREC__<SECTION>__<KEY>=value` (value parsed as YAML) overrides one key for a single run
without editing the file, e.g. `MMREC__SPLIT__KIND=random`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmrec.constants import DEFAULT_KS, SEED
from mmrec.encoders.config import ExtractParams
from mmrec.errors import ConfigError
from mmrec.recommend import RecommendParams
from mmrec.tracking import TrackingParams

ENV_PREFIX = "MMREC__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetParams(_Section):
    """Which dataset `dvc repro` runs on.

    Attributes:
        spec: the dataset.yaml.
        raw: the raw data folder DVC tracks as the ingest dependency.
        name: `name:` inside that dataset.yaml; DVC uses it to name the stage outputs.
    """

    spec: str = "data/raw/synth/dataset.yaml"
    raw: str = "data/raw/synth"
    name: str = "synth"


class SynthParams(_Section):
    """The embedded default dataset (`mmrec data synth`)."""

    seed: int = SEED
    users: int = 300
    items: int = 240


class IngestParams(_Section):
    """Ingestion has no tunables yet; the section exists so DVC can track future ones."""

    chunk_rows: int = 1_000_000


class ValidateParams(_Section):
    """Validation thresholds.

    Attributes:
        max_quarantine_fraction: above this share of quarantined rows in a table, the table
            fails as a whole (something systematic is wrong; quarantining would hide it).
        timestamp_min/max: the sane range for interaction timestamps (ISO dates, UTC).
        check_media: open every media file and check it decodes (image/audio/video).
        min_text_chars/max_text_chars: document length bounds for items with text.
    """

    max_quarantine_fraction: float = Field(0.2, ge=0.0, le=1.0)
    timestamp_min: str = "1990-01-01"
    timestamp_max: str = "2100-01-01"
    check_media: bool = True
    min_text_chars: int = 1
    max_text_chars: int = 20_000


class SplitParams(_Section):
    """How interactions are split (ARCHITECTURE.md §6).

    Attributes:
        kind: temporal (per user, by time), random (per user), or global_time (one cut for all).
        ratios: train/valid/test shares.
        cold_item_fraction: newest share of items (by first interaction) held out of training
            entirely and evaluated as the cold-start slice; 0 disables it.
        min_user_interactions: users with fewer (after the cold hold-out) stay in train only.
    """

    kind: Literal["temporal", "random", "global_time"] = "temporal"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    cold_item_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    min_user_interactions: int = Field(3, ge=1)
    seed: int = SEED

    @model_validator(mode="after")
    def _ratios(self) -> SplitParams:
        if any(r < 0 for r in self.ratios) or abs(sum(self.ratios) - 1.0) > 1e-6:
            raise ValueError(f"split.ratios must be three non-negative shares summing to 1, got {list(self.ratios)}")
        return self


class TrainParams(_Section):
    """Which models to train and their hyper-parameters (`models.<name>: {param: value}`)."""

    models: list[str] = Field(default_factory=lambda: ["popularity", "itemknn", "bpr", "lightgcn"])
    seed: int = SEED
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)


class EvaluateParams(_Section):
    ks: list[int] = Field(default_factory=lambda: list(DEFAULT_KS))
    selection_metric: str = "recall@20"
    batch_size: int = 1024


class OrchestrateParams(_Section):
    """The `orchestrate:` section of params.yaml.

    Attributes:
        task_runner: `threads` or `dask`.
        max_workers: threads of the thread-pool runner.
        dask_address: scheduler of an existing Dask cluster (`tcp://host:8786`); empty starts a
            temporary LocalCluster for the run.
        dask_workers: workers of that LocalCluster.
        dask_processes: LocalCluster workers as processes (True) or threads of this process.
        retries: retries of a task that failed for a transient reason (I/O, network, OOM-kill of
            a worker); errors of the MMRecError family are deterministic and never retried.
        retry_delay_seconds: wait before each retry.
    """

    task_runner: Literal["threads", "dask"] = "threads"
    max_workers: int = Field(4, ge=1)
    dask_address: str | None = None
    dask_workers: int = Field(2, ge=1)
    dask_processes: bool = True
    retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(10.0, ge=0)


class Params(_Section):
    """The whole of params.yaml."""

    dataset: DatasetParams = Field(default_factory=DatasetParams)
    synth: SynthParams = Field(default_factory=SynthParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)
    extract: ExtractParams = Field(default_factory=ExtractParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    recommend: RecommendParams = Field(default_factory=RecommendParams)
    orchestrate: OrchestrateParams = Field(default_factory=OrchestrateParams)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {'.'.join(parts[:-1])} is not a section in params.yaml")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def load_params(path: str | os.PathLike[str] | None = "params.yaml", environ: dict[str, str] | None = None) -> Params:
    """Read params.yaml (missing file: all defaults) and apply `MMREC__...` overrides.

    Raises:
        ConfigError: unknown keys or bad values, naming the file and key.
    """
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None and Path(path).is_file():
        where = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
    raw = _apply_env(raw, dict(os.environ if environ is None else environ))
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: invalid params: {problems}") from exc
