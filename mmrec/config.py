"""Typed settings: `params.yaml` (one namespace per stage) plus environment overrides.

`params.yaml` is what DVC tracks, so every tunable lives there; an environment variable
`MMREC__<SECTION>__<KEY>=value` (value parsed as YAML) overrides one key for a single run
without editing the file, e.g. `MMREC__SPLIT__KIND=random`.

`profile` picks where the services live: `embedded` (default: sqlite MLflow store in the
workspace, Prefect's ephemeral server, Feast's sqlite online store, threads) or `production`
(infra/: every endpoint comes from the environment variables in `PRODUCTION_ENV`, and a missing
one is a ConfigError naming it, never a silent fall-back to the embedded stores).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmrec.constants import DEFAULT_KS, SEED
from mmrec.encoders.config import ExtractParams
from mmrec.errors import ConfigError
from mmrec.events.config import EventsParams
from mmrec.params.feast import FeaturesParams
from mmrec.params.recommend import RecommendParams
from mmrec.params.tracking import TrackingParams
from mmrec.runtime import RuntimeParams
from mmrec.tuning.params import TuneParams

ENV_PREFIX = "MMREC__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetParams(_Section):
    """Which dataset `dvc repro` runs on.

    Attributes:
        spec: the dataset.yaml.
        raw: the raw data folder DVC tracks as the ingest dependency.
        name: `name:` inside that dataset.yaml; DVC uses it to name the stage outputs.
        params: the dataset's parameter overlay, tracked by every DVC stage as a whole file
            (`params/<name>.yaml`, or the params.yaml beside the dataset.yaml); it must exist.
    """

    spec: str = "data/raw/synth/dataset.yaml"
    raw: str = "data/raw/synth"
    name: str = "synth"
    params: str = "params/synth.yaml"


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
        timestamp_min/max: the sane range for interaction timestamps (ISO dates, UTC). With
            timestamp_max unset (the default) the upper bound is the time of the run plus
            `future_tolerance`: an event cannot have happened after the data was validated, and
            one far-future row would otherwise become the data's end (zeroing every window
            counted back from it).
        future_tolerance: clock skew allowed beyond "now" (a pandas Timedelta, e.g. "1 day", "6h").
        check_media: open every media file and check it decodes (image/audio/video).
        min_text_chars/max_text_chars: document length bounds for items with text.
    """

    max_quarantine_fraction: float = Field(0.2, ge=0.0, le=1.0)
    timestamp_min: str = "1990-01-01"
    timestamp_max: str | None = None
    future_tolerance: str = "1 day"
    check_media: bool = True
    min_text_chars: int = 1
    max_text_chars: int = 20_000

    @model_validator(mode="after")
    def _tolerance(self) -> ValidateParams:
        import pandas as pd

        try:
            tol = pd.Timedelta(self.future_tolerance)
        except ValueError as exc:
            raise ValueError(
                f"validate.future_tolerance {self.future_tolerance!r} is not a duration (e.g. '1 day', '6h')"
            ) from exc
        if tol < pd.Timedelta(0):
            raise ValueError(f"validate.future_tolerance {self.future_tolerance!r} must not be negative")
        return self


class SplitParams(_Section):
    """How interactions are split (ARCHITECTURE.md §6).

    Attributes:
        kind: temporal (per user, by time), random (per user), or global_time (one cut for all).
        ratios: train/valid/test shares.
        cold_item_fraction: newest share of items (by first interaction) held out of training
            entirely and evaluated as the cold-start slice; 0 disables it.
        cold_valid_fraction: share of those cold items (the older ones) kept as the cold-valid
            slice (`cold_valid.tsv`), on which cold-start settings are chosen; the rest, the
            newest, are the cold test. 0: all cold items are test (the split hash is then the one
            of a split made before cold_valid existed).
        min_user_interactions: users with fewer (after the cold hold-out) stay in train only.
    """

    kind: Literal["temporal", "random", "global_time"] = "temporal"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    cold_item_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    cold_valid_fraction: float = Field(0.0, ge=0.0, lt=1.0)
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


class AblationParams(_Section):
    """Per-modality ablation of one multimodal model (trained by the evaluate stage).

    Attributes:
        model: the registered model to ablate (it must take a `modalities` argument); None: off.
        variants: each one trained and evaluated: a modality name (that modality alone), `all`
            (the model's configured modalities), `random_<modality>` (that modality replaced by
            seeded Gaussian vectors, `mmrec.models.item_features.random_control_features`) or
            `random` (every used modality replaced): the controls separate content from capacity.
        params: overrides of the model's `train.params` for the ablation runs (e.g. fewer epochs).
    """

    model: str | None = None
    variants: list[str] = Field(
        default_factory=lambda: ["text", "image", "all", "random_text", "random_image", "random"]
    )
    params: dict[str, Any] = Field(default_factory=dict)


class EvaluateParams(_Section):
    """Evaluation and the report (ARCHITECTURE.md §6, §11).

    Attributes:
        ks: cut-offs of every metric.
        selection_metric: validation metric that picks the best model.
        batch_size: users scored per batch.
        sparse_max_train: the sparse-user slice: test users with at most this many training
            interactions.
        reference: the model every other one is compared with (ratio + bootstrap CI).
        bootstrap_resamples: paired bootstrap resamples over users for those CIs.
        confidence: the CIs' coverage.
        seed: seed of the bootstrap, the random scorer, the user pairs and the random control.
        personalisation_pairs: user pairs sampled for the cold-slice rank correlation.
        cold_permutations: random global orders of the cold items drawn for the cold slice's
            permutation null (each model's cold Recall/NDCG@20 gets a p-value against it).
        cold_lift_target: the cold-slice Recall@20 over random ranking a multimodal model should
            reach (the report's quality-target check).
        ablation: the per-modality ablation (off unless `ablation.model` is set).
    """

    ks: list[int] = Field(default_factory=lambda: list(DEFAULT_KS))
    selection_metric: str = "recall@20"
    batch_size: int = 1024
    sparse_max_train: int = Field(20, ge=0)
    reference: str = "lightgcn"
    bootstrap_resamples: int = Field(1000, ge=1)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    seed: int = SEED
    personalisation_pairs: int = Field(200, ge=1)
    cold_permutations: int = Field(1000, ge=1)
    cold_lift_target: float = Field(3.5, gt=0.0)
    ablation: AblationParams = Field(default_factory=AblationParams)


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
        shard_items: items per Dask extraction task (mmrec/distributed/extract.py).
        score_block_users: users per Dask scoring task, rounded up to a multiple of the scoring
            chunk (mmrec/distributed/scoring.py).
    """

    task_runner: Literal["threads", "dask"] = "threads"
    max_workers: int = Field(4, ge=1)
    dask_address: str | None = None
    dask_workers: int = Field(2, ge=1)
    dask_processes: bool = True
    retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(10.0, ge=0)
    shard_items: int = Field(2048, ge=1)
    score_block_users: int = Field(16_384, ge=1)


Profile = Literal["embedded", "production"]

#: what the production profile reads from the environment (infra/.env.example sets each one)
PRODUCTION_ENV: dict[str, str] = {
    "MLFLOW_TRACKING_URI": "MLflow tracking server, e.g. http://mlflow:5000",
    "PREFECT_API_URL": "Prefect server API, e.g. http://prefect-server:4200/api",
    "MMREC_REDIS_URL": "Redis of the Feast online store, e.g. redis://:PASSWORD@redis:6379/0",
    "DASK_SCHEDULER_ADDRESS": "Dask scheduler of the task runner, e.g. tcp://dask-scheduler:8786",
}


class Endpoints(BaseModel):
    """Where the production profile's services are (resolved from `PRODUCTION_ENV`)."""

    model_config = ConfigDict(frozen=True)

    tracking_uri: str
    prefect_api_url: str
    redis_url: str
    dask_address: str


def production_endpoints(environ: dict[str, str] | None = None) -> Endpoints:
    """The production services from the environment.

    Raises:
        ConfigError: one or more variables missing (all of them listed, with an example each),
            or a tracking URI that points at an embedded store.
    """
    env = dict(os.environ if environ is None else environ)
    missing = [f"{k} ({why})" for k, why in PRODUCTION_ENV.items() if not env.get(k, "").strip()]
    if missing:
        raise ConfigError(
            "profile production needs these environment variables: "
            + "; ".join(missing)
            + ". Set them (infra/.env.example lists them) or use MMREC__PROFILE=embedded"
        )
    uri = env["MLFLOW_TRACKING_URI"].strip()
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={uri!r}: profile production needs a tracking server (http(s)://...), "
            "not an embedded store"
        )
    return Endpoints(
        tracking_uri=uri,
        prefect_api_url=env["PREFECT_API_URL"].strip(),
        redis_url=env["MMREC_REDIS_URL"].strip(),
        dask_address=env["DASK_SCHEDULER_ADDRESS"].strip(),
    )


class Params(_Section):
    """The whole of params.yaml."""

    profile: Profile = "embedded"
    dataset: DatasetParams = Field(default_factory=DatasetParams)
    synth: SynthParams = Field(default_factory=SynthParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)
    extract: ExtractParams = Field(default_factory=ExtractParams)
    train: TrainParams = Field(default_factory=TrainParams)
    tune: TuneParams = Field(default_factory=TuneParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    recommend: RecommendParams = Field(default_factory=RecommendParams)
    features: FeaturesParams = Field(default_factory=FeaturesParams)
    events: EventsParams = Field(default_factory=EventsParams)
    orchestrate: OrchestrateParams = Field(default_factory=OrchestrateParams)
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)

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


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file holding a mapping of sections; a ConfigError names the file otherwise."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return raw


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` over `base`: mappings merge key by key (recursively), anything else is replaced.

    So an overlay `train: {params: {lightgcn: {lr: 0.001}}}` changes one learning rate and keeps
    every other lightgcn setting of the base file; a list (e.g. `train.models`) is replaced whole.
    """
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_params(
    path: str | os.PathLike[str] | None = "params.yaml",
    environ: dict[str, str] | None = None,
    overlays: Sequence[str | os.PathLike[str]] = (),
) -> Params:
    """Read params.yaml (missing file: all defaults), merge `overlays` over it in order, and apply
    `MMREC__...` overrides.

    Args:
        path: the base parameter file.
        environ: the environment to read `MMREC__...` from (default: os.environ).
        overlays: further parameter files, each merged over the previous (`deep_merge`); each
            must exist (`params_files` finds the ones that apply to a dataset).

    Raises:
        ConfigError: unknown keys or bad values, naming the file(s) and key.
    """
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None and Path(path).is_file():
        where = str(path)
        raw = read_yaml_mapping(path)
    for extra in overlays:
        if not Path(extra).is_file():
            raise ConfigError(f"{extra}: parameter overlay not found")
        raw = deep_merge(raw, read_yaml_mapping(extra))
        where = f"{where} + {extra}" if where != "defaults" else str(extra)
    env = dict(os.environ if environ is None else environ)
    raw = _apply_env(raw, env)
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: invalid params: {problems}") from exc
    return apply_profile(params, env)


def apply_profile(params: Params, environ: dict[str, str] | None = None) -> Params:
    """Point `params` at the profile's services; embedded: unchanged.

    Production: tracking goes to `MLFLOW_TRACKING_URI`, tasks to the Dask scheduler at
    `DASK_SCHEDULER_ADDRESS` (unless params.yaml names another server/scheduler explicitly) and
    Feast's online store to the Redis at `MMREC_REDIS_URL`. Prefect reads `PREFECT_API_URL`
    itself; requiring it here stops a run from silently using a temporary server.
    """
    if params.profile == "embedded":
        return params
    ep = production_endpoints(environ)
    update: dict[str, Any] = {
        "tracking": params.tracking.model_copy(update={"uri": params.tracking.uri or ep.tracking_uri}),
        "orchestrate": params.orchestrate.model_copy(
            update={"task_runner": "dask", "dask_address": params.orchestrate.dask_address or ep.dask_address}
        ),
        "features": params.features.model_copy(update={"profile": "redis", "redis_url": ep.redis_url}),
    }
    return params.model_copy(update=update)


#: folder (under the workspace) of machine-written per-dataset parameter files: `params/<name>.yaml`
TUNED_PARAMS_DIR = "params"
#: name of a dataset's own parameter file, beside its dataset.yaml
DATASET_PARAMS_FILE = "params.yaml"


def dataset_params_files(spec: Any, workspace: str | os.PathLike[str] = ".") -> list[Path]:
    """The per-dataset parameter overlays that exist for `spec`, lowest precedence first.

    1. `params.yaml` beside the dataset.yaml: settings shipped with the dataset (chosen on its
       validation split), e.g. examples/ml100k-mm/params.yaml.
    2. `<workspace>/params/<name>.yaml`: written for this machine's copy of the dataset (the
       place `mmrec tune` writes to); it wins over the shipped file.

    Both are merged over the base parameter file (`--params`, default ./params.yaml); the
    `MMREC__SECTION__KEY` environment overrides win over all of them.
    """
    found: list[Path] = []
    if getattr(spec, "spec_path", None):
        beside = Path(spec.spec_path).resolve().parent / DATASET_PARAMS_FILE
        if beside.is_file():
            found.append(beside)
    tuned = (Path(workspace) / TUNED_PARAMS_DIR / f"{spec.name}.yaml").resolve()
    if tuned.is_file():
        found.append(tuned)
    return found


def load_run_params(
    params: str | os.PathLike[str] | None,
    spec: Any,
    workspace: str | os.PathLike[str] = ".",
    environ: dict[str, str] | None = None,
) -> tuple[Params, list[str]]:
    """The parameters of a run on `spec`: the base file plus the dataset's overlays (`dataset_params_files`).

    Returns:
        (params, files): `files` lists the parameter files used, base first (what a run prints
        and records, so a result can be traced to its settings).
    """
    base = Path(params).resolve() if params is not None else None
    overlays = [p for p in dataset_params_files(spec, workspace) if base is None or p != base]
    files = ([str(base)] if base is not None and base.is_file() else []) + [str(p) for p in overlays]
    return load_params(base, environ=environ, overlays=overlays), files
