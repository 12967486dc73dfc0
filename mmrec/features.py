"""Feast glue: export feature tables, apply the repository, materialise, read online and historically.

The Feast repository (`feature_repo/`: entities, data sources, feature views, feature services)
is defined once, dataset-free; this module binds it to one dataset:

- export: `export_tables` builds the tables of `mmrec.feature_tables` from the pipeline's
  artifacts (feature files, the split, the champion model, latest recommendations) and writes
  them to `data/<name>/feast/tables/`, with `models.json` listing the registered model versions
  (one feature service each). A table whose content did not change keeps its timestamps and is
  not rewritten, so `materialize_incremental` has nothing new to load for it.
- config: the profile's `feature_store[.<profile>].yaml` is the template; the project becomes
  `mmrec_<name>` and the registry/online database live under `data/<name>/feast/<profile>/`, so
  datasets and profiles never share state (Redis keys end with the project name).
- apply / materialise: `apply` registers the repo's objects for the dataset (stale feature
  services are deleted); `materialize` runs `materialize_incremental` up to now.
- reads: `OnlineFeatures` (the API's online reads) and `historical_features` /
  `point_in_time_training_set` (training sets joined as of each interaction's time).

Feast is imported inside functions only: it takes seconds to import and most commands never
need it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from mmrec import feature_tables as ft
from mmrec.constants import ITEM_ID, MODALITIES, TIMESTAMP, USER_ID
from mmrec.errors import ConfigError, DataError, MMRecError, ModelError, ServiceUnavailable, StageError
from mmrec.params.feast import FeaturesParams, features_params
from mmrec.paths import DatasetPaths

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from mmrec.models.base import Recommender
    from mmrec.stages import StageContext

log = logging.getLogger(__name__)

#: environment variable feature_repo/data_sources.py reads: the folder of the exported tables
DATA_ENV = "MMREC_FEAST_DATA"
#: embedding views by the short name `OnlineFeatures.item_embeddings(view=...)` takes
EMBEDDING_VIEWS = {**{m: f"item_{m}_embedding" for m in MODALITIES}, "fused": "item_fused_embedding",
                   "model": "item_model_embedding"}
_DEFAULT_REPO = Path(__file__).resolve().parents[1] / "feature_repo"


# -- where things are -------------------------------------------------------------------------------


def feast_dir(paths: DatasetPaths) -> Path:
    return paths.data / "feast"


def tables_dir(paths: DatasetPaths) -> Path:
    return feast_dir(paths) / "tables"


def table_path(paths: DatasetPaths, table: str) -> Path:
    return tables_dir(paths) / f"{table}.parquet"


def project_name(dataset: str) -> str:
    """Feast projects allow letters, digits and underscores."""
    return "mmrec_" + re.sub(r"[^A-Za-z0-9_]", "_", dataset)


def repo_dir(fp: FeaturesParams, workspace: Path = Path(".")) -> Path:
    if fp.repo is None:
        repo = workspace / "feature_repo" if (workspace / "feature_repo" / "feature_store.yaml").is_file() else _DEFAULT_REPO
    else:
        repo = Path(fp.repo)
        if not repo.is_absolute():
            repo = workspace / repo if (workspace / repo).is_dir() else _DEFAULT_REPO.parent / repo
    if not (repo / "feature_store.yaml").is_file():
        raise ConfigError(f"{repo}: not a Feast repository (no feature_store.yaml); set features.repo in params.yaml")
    return repo.resolve()


def redis_connection_string(url: str) -> str:
    """`redis://[:password@]host:port[/db]` -> Feast's `host:port,db=N[,password=...]`."""
    from urllib.parse import urlparse

    if "://" not in url:
        return url  # already Feast's form
    u = urlparse(url)
    if u.scheme not in ("redis", "rediss") or not u.hostname:
        raise ConfigError(f"features.redis_url {url!r}: expected redis://host:port/db")
    parts = [f"{u.hostname}:{u.port or 6379}"]
    db = u.path.lstrip("/")
    if db:
        if not db.isdigit():
            raise ConfigError(f"features.redis_url {url!r}: the database must be a number, e.g. redis://127.0.0.1:6379/0")
        parts.append(f"db={db}")
    if u.password:
        parts.append(f"password={u.password}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def store_config(paths: DatasetPaths, fp: FeaturesParams, profile: str | None = None) -> RepoConfig:
    """The profile's feature_store yaml, bound to this dataset (project, registry, online store)."""
    import yaml
    from feast.repo_config import RepoConfig

    repo = repo_dir(fp, paths.workspace)
    profile = profile or fp.profile
    yaml_file = repo / ("feature_store.yaml" if profile == "sqlite" else f"feature_store.{profile}.yaml")
    if not yaml_file.is_file():
        raise ConfigError(f"{yaml_file}: no Feast profile {profile!r} (features.profile); profiles are sqlite, redis")
    raw = yaml.safe_load(os.path.expandvars(yaml_file.read_text(encoding="utf-8"))) or {}
    state = (feast_dir(paths) / profile).resolve()
    raw["project"] = fp.project or project_name(paths.name)
    registry = raw.get("registry")
    raw["registry"] = {**(registry if isinstance(registry, dict) else {}), "path": str(state / "registry.db")}
    online = dict(raw.get("online_store") or {"type": "sqlite"})
    if online.get("type", "sqlite") == "sqlite":
        online["path"] = str(state / "online.db")
    elif online.get("type") == "redis" and fp.redis_url:
        online["connection_string"] = redis_connection_string(fp.redis_url)
    raw["online_store"] = online
    try:
        config = RepoConfig(**raw)
    except Exception as exc:  # pydantic / Feast config errors: name the file
        raise ConfigError(f"{yaml_file}: invalid Feast configuration: {exc}") from exc
    config.repo_path = repo
    return config


def feature_store(paths: DatasetPaths, fp: FeaturesParams, profile: str | None = None) -> FeatureStore:
    from feast import FeatureStore

    config = store_config(paths, fp, profile)
    return FeatureStore(repo_path=str(config.repo_path), config=config)


# -- the repository's objects, bound to a dataset -----------------------------------------------------

_LOAD_LOCK = threading.Lock()


@dataclass
class RepoObjects:
    entities: list[Any]
    data_sources: list[Any]
    feature_views: list[Any]
    feature_services: list[Any]

    def all(self) -> list[Any]:
        return [*self.entities, *self.data_sources, *self.feature_views, *self.feature_services]


@contextmanager
def _repo_import(repo: Path, data: str) -> Iterator[list[str]]:
    """Import the repo's modules fresh with `$MMREC_FEAST_DATA=data`, as `feast apply` would.

    The definitions import each other by bare name (`from entities import item`), like every
    Feast repo; they are imported under those names and removed from `sys.modules` afterwards so
    the next dataset gets fresh objects. A lock keeps concurrent loads apart.
    """
    names = sorted(p.stem for p in repo.glob("*.py") if p.name != "__init__.py")
    with _LOAD_LOCK:
        saved_env = os.environ.get(DATA_ENV)
        saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
        saved_bytecode = sys.dont_write_bytecode
        os.environ[DATA_ENV] = data
        sys.path.insert(0, str(repo))
        sys.dont_write_bytecode = True  # no __pycache__ in the repo: DVC hashes it as a dependency
        try:
            yield names
        finally:
            sys.dont_write_bytecode = saved_bytecode
            sys.path.remove(str(repo))
            for n in names:
                sys.modules.pop(n, None)
            sys.modules.update(saved)
            if saved_env is None:
                os.environ.pop(DATA_ENV, None)
            else:
                os.environ[DATA_ENV] = saved_env


def load_objects(paths: DatasetPaths, fp: FeaturesParams) -> RepoObjects:
    """Entities, sources, views and services of the repo, reading this dataset's tables."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    repo = repo_dir(fp, paths.workspace)
    data = os.path.relpath(tables_dir(paths).resolve(), repo)  # relative: the registry stays relocatable
    found = RepoObjects([], [], [], [])
    with _repo_import(repo, data) as names:
        for name in names:
            try:
                module = importlib.import_module(name)
            except MMRecError:
                raise
            except Exception as exc:  # a broken definition file: say which
                raise ConfigError(f"{repo / (name + '.py')}: cannot load Feast definitions: {type(exc).__name__}: {exc}") from exc
            for attr in dir(module):
                obj = getattr(module, attr)
                for kind, bucket in ((Entity, found.entities), (FeatureView, found.feature_views),
                                     (FeatureService, found.feature_services), (DataSource, found.data_sources)):
                    if isinstance(obj, kind) and not any(obj is o for o in bucket):
                        bucket.append(obj)
    return found


# -- export -------------------------------------------------------------------------------------------


def _now() -> pd.Timestamp:
    return pd.Timestamp(datetime.now(UTC)).floor("s")


def _content_hash(df: pd.DataFrame, table: str) -> str:
    """Hash of a table's content, timestamps of the not-yet-stamped rows excluded (they are NaT)."""
    import pyarrow as pa

    t = pa.Table.from_pandas(df.drop(columns=[ft.CREATED]).reset_index(drop=True),
                             schema=ft.arrow_schema(table).remove(ft.arrow_schema(table).get_field_index(ft.CREATED)),
                             preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as writer:
        writer.write_table(t)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _write_table(path: Path, df: pd.DataFrame, table: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmrec.io import atomic_path

    t = pa.Table.from_pandas(df.reset_index(drop=True), schema=ft.arrow_schema(table), preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(t, tmp)


def _interactions(ctx: StageContext, fp: FeaturesParams) -> pd.DataFrame:
    """user_id, item_id, timestamp (unix seconds) the statistics summarise."""
    if fp.stats_from == "train":
        from mmrec.data.splits import read_split_frames

        frames, _ = read_split_frames(ctx.paths, ctx.params.split.kind)
        return frames.train[[USER_ID, ITEM_ID, TIMESTAMP]]
    f = ctx.paths.validated_table("interactions")
    if not f.is_file():
        raise StageError(f"{f}: validated interactions missing; run `mmrec stage validate` first")
    df = pd.read_parquet(f, columns=[USER_ID, ITEM_ID, TIMESTAMP])
    ts = df[TIMESTAMP]
    if pd.api.types.is_datetime64_any_dtype(ts):
        ts = (pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return pd.DataFrame({USER_ID: df[USER_ID].astype(str), ITEM_ID: df[ITEM_ID].astype(str), TIMESTAMP: ts.astype("int64")})


def _embedding_tables(ctx: StageContext) -> tuple[dict[str, pd.DataFrame], dict[str, tuple[list[str], np.ndarray]]]:
    from mmrec.encoders.store import read_features
    from mmrec.models.features import feature_path

    tables, vectors = {}, {}
    for m in MODALITIES:
        path = feature_path(ctx.paths, ctx.params.extract, m)
        if not path.is_file():
            tables[f"item_{m}_embedding"] = ft.empty(f"item_{m}_embedding")
            continue
        feats = read_features(path)
        encoder = str(feats.meta.get("encoder") or feats.meta.get("encoder_id") or path.stem)
        tables[f"item_{m}_embedding"] = ft.embedding_table(feats.item_ids, feats.matrix, encoder)
        if len(feats.item_ids):
            vectors[m] = (feats.item_ids, feats.matrix)
    tables["item_fused_embedding"] = ft.fused_table(vectors)
    return tables, vectors


def champion(ctx: StageContext) -> tuple[Recommender, dict[str, Any]] | None:
    """The registry's champion; else the best model of the last evaluation; else None."""
    from mmrec.models import load_model

    try:
        from mmrec.tracking.registry import load_champion

        model, info = load_champion(ctx)
        return model, {"model": model.name, "version": str(info.get("version"))}
    except ModelError as exc:
        log.info("no champion in the registry (%s); using the best evaluated model if any", exc)
    if ctx.paths.metrics.is_file():
        best = json.loads(ctx.paths.metrics.read_text()).get("best_model")
        if best and (ctx.paths.model_dir(best) / "model.json").is_file():
            return load_model(ctx.paths.model_dir(best)), {"model": best, "version": "local"}
    return None


def model_versions(ctx: StageContext, champion_version: str | None, factor_views: bool) -> list[dict[str, Any]]:
    """Every registered version of `mmrec-<dataset>` and the views it reads; [] without a registry."""
    from mmrec.models.registry import get_model_class
    from mmrec.tracking.registry import registry_state

    try:
        state = registry_state(ctx)
    except ModelError as exc:
        log.info("no registered model (%s): no feature services", exc)
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in state.get("aliases", {}).items():
        aliases.setdefault(str(version), []).append(alias)
    out = []
    for v in state.get("versions", []):
        version, name = str(v["version"]), str(v.get("model") or "")
        views = ["item_stats", "user_stats"]
        try:
            mods = list(get_model_class(name).required_modalities) if name else []
        except ModelError:
            mods = []
        views += [f"item_{m}_embedding" for m in mods] + (["item_fused_embedding"] if mods else [])
        if version == champion_version:
            views += (["user_embedding", "item_model_embedding"] if factor_views else []) + ["user_recommendations"]
        out.append({"version": version, "model": name, "aliases": sorted(aliases.get(version, [])), "views": views})
    return out


def _factors(model: Recommender) -> tuple[list[str], list[str], np.ndarray, np.ndarray] | None:
    """(user ids, item ids, user factors, item factors) of a factor model; None for other models."""
    uf, itf = getattr(model, "user_factors", None), getattr(model, "item_factors", None)
    if isinstance(uf, np.ndarray) and isinstance(itf, np.ndarray) and model.user_ids is not None and model.item_ids is not None:
        if uf.shape[0] == len(model.user_ids) and itf.shape[0] == len(model.item_ids):
            return [str(u) for u in model.user_ids], [str(i) for i in model.item_ids], uf, itf
    return None


def export_tables(
    ctx: StageContext,
    parts: Sequence[str] = ("embeddings", "stats", "model", "recommendations"),
    model: tuple[Recommender, dict[str, Any]] | Literal["champion"] | None = "champion",
    versions: list[dict[str, Any]] | None = None,
    now: pd.Timestamp | None = None,
) -> dict[str, Any]:
    """Write the feature tables of `parts` (and an empty table for any other that does not exist).

    Args:
        parts: which tables to (re)build: embeddings (per modality + fused), stats (item/user),
            model (champion factors), recommendations (latest.parquet).
        model: (model, {"model", "version"}) whose factors to export; "champion" loads it
            (`champion`); None exports no factors.
        versions: the model versions of `models.json`; None asks the MLflow registry.
        now: the export time (tests); rows whose content changed are stamped with it.

    Returns:
        {"tables": {table: {"rows", "changed", "event_timestamp"}}, "versions": [...], "path"}.
    """
    fp = features_params(ctx.params)
    now = now or _now()
    folder = tables_dir(ctx.paths)
    manifest_file = folder / "export.json"
    manifest = _read_manifest(manifest_file)
    # never stamp at or before what an online store already loaded: materialize_incremental
    # only looks at rows after its last end
    clock = max(now, pd.Timestamp(manifest["materialized_until"])) if manifest.get("materialized_until") else now
    built: dict[str, pd.DataFrame] = {}
    data_end: pd.Timestamp | None = None
    if "embeddings" in parts:
        built.update(_embedding_tables(ctx)[0])
    if "stats" in parts:
        inter = _interactions(ctx, fp)
        data_end = ft.data_end(inter)
        built["item_stats"] = ft.stats_table(inter, ITEM_ID, fp.stats_window_days)
        built["user_stats"] = ft.stats_table(inter, USER_ID, fp.stats_window_days)
    champion_version: str | None = None
    has_factors = False
    if "model" in parts:
        loaded = champion(ctx) if model == "champion" else model
        factors = None
        if loaded is not None and not isinstance(loaded, str):
            m, info = loaded
            champion_version = str(info.get("version"))
            factors = _factors(m)
        if factors is not None:
            has_factors = True
            name, version = str(info.get("model", m.name)), str(info.get("version"))
            users, items, uf, itf = factors
            built["user_embedding"] = ft.factor_table(USER_ID, users, uf, name, version)
            built["item_model_embedding"] = ft.factor_table(ITEM_ID, items, itf, name, version)
        else:
            built["user_embedding"], built["item_model_embedding"] = ft.empty("user_embedding"), ft.empty("item_model_embedding")
    if "recommendations" in parts:
        built["user_recommendations"] = _recommendations(ctx)

    summary: dict[str, Any] = {"path": str(folder), "tables": {}}
    for table in ft.TABLES:
        path = table_path(ctx.paths, table)
        if table not in built:
            if not path.is_file():
                _write_table(path, ft.empty(table), table)
            continue
        df = built[table]
        digest = _content_hash(df, table)
        prev = manifest["tables"].get(table, {})
        changed = prev.get("hash") != digest or not path.is_file()
        if changed:
            # values computed now; statistics rows are never stamped before the data they summarise
            stamp = max(clock, data_end) if table.endswith("_stats") and data_end is not None else clock
            df = df.copy()
            df[ft.EVENT_TIMESTAMP] = df[ft.EVENT_TIMESTAMP].fillna(stamp)
            df[ft.CREATED] = now
            _write_table(path, df, table)
            manifest["tables"][table] = {"hash": digest, "event_timestamp": stamp.isoformat(), "rows": len(df)}
        summary["tables"][table] = {"rows": len(df), "changed": changed,
                                    "event_timestamp": manifest["tables"][table]["event_timestamp"]}
    if "model" in parts or versions is not None:
        if versions is None:
            versions = model_versions(ctx, champion_version, has_factors)
        from mmrec.io import write_json
        from mmrec.tracking.store import registered_model_name

        write_json(feast_dir(ctx.paths) / "models.json", {"registered_model": registered_model_name(ctx.spec.name), "versions": versions})
        summary["versions"] = versions
    from mmrec.io import write_json

    write_json(manifest_file, manifest)
    return summary


def _read_manifest(path: Path) -> dict[str, Any]:
    """export.json: {"tables": {table: {"hash", "event_timestamp", "rows"}}, "materialized_until"}."""
    if not path.is_file():
        return {"tables": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); delete it (the next export re-stamps every table)") from exc
    manifest.setdefault("tables", {})
    return manifest


def _recommendations(ctx: StageContext) -> pd.DataFrame:
    f = ctx.paths.recommendations
    if not f.is_file():
        return ft.empty("user_recommendations")
    info_file = ctx.paths.reports / "recommendations.json"
    model, version = "unknown", "unknown"
    if info_file.is_file():
        info = json.loads(info_file.read_text()).get("model", {})
        model, version = str(info.get("name", model)), str(info.get("version", version))
    try:
        recs = pd.read_parquet(f)
    except Exception as exc:  # unreadable parquet
        raise DataError(f"{f}: cannot read recommendations ({exc}); re-run `mmrec recommend`") from exc
    return ft.recommendations_table(recs, model, version)


# -- apply, materialise -----------------------------------------------------------------------------


def apply(ctx: StageContext, profile: str | None = None) -> dict[str, Any]:
    """Register the repository's objects for this dataset; delete feature services and views gone from it."""
    fp = features_params(ctx.params)
    for table in ft.TABLES:  # sources must exist before Feast reads them
        if not table_path(ctx.paths, table).is_file():
            _write_table(table_path(ctx.paths, table), ft.empty(table), table)
    objects = load_objects(ctx.paths, fp)
    store = feature_store(ctx.paths, fp, profile)
    keep_views = {v.name for v in objects.feature_views}
    keep_services = {s.name for s in objects.feature_services}
    stale: list[Any] = []
    try:
        stale += [s for s in store.list_feature_services() if s.name not in keep_services]
        stale += [v for v in store.list_feature_views() if v.name not in keep_views]
    except Exception as exc:  # noqa: BLE001 - a fresh registry has nothing to list
        log.debug("nothing registered yet (%s)", exc)
    store.apply(objects.all(), objects_to_delete=stale, partial=False)
    return {"project": store.project, "profile": profile or fp.profile, "views": sorted(keep_views),
            "services": sorted(keep_services), "deleted": sorted(o.name for o in stale)}


def materialize(ctx: StageContext, profile: str | None = None, full: bool = False) -> dict[str, Any]:
    """Load new rows into the online store: `materialize_incremental` up to now (`full`: everything)."""
    fp = features_params(ctx.params)
    store = feature_store(ctx.paths, fp, profile)
    end = _now() + pd.Timedelta(seconds=1)
    manifest_file = tables_dir(ctx.paths) / "export.json"
    manifest = _read_manifest(manifest_file)
    # rows stamped in the future (synthetic clocks, data ends ahead of now) must still be served
    end = max([end, *[pd.Timestamp(t["event_timestamp"]) + pd.Timedelta(seconds=1) for t in manifest["tables"].values()]])
    start = time.perf_counter()
    if full:
        store.materialize(start_date=datetime(1970, 1, 2, tzinfo=UTC), end_date=end.to_pydatetime())
    else:
        store.materialize_incremental(end_date=end.to_pydatetime())
    if manifest_file.is_file():
        from mmrec.io import write_json

        manifest = _read_manifest(manifest_file)
        until = max([end, *([pd.Timestamp(manifest["materialized_until"])] if manifest.get("materialized_until") else [])])
        write_json(manifest_file, {**manifest, "materialized_until": until.isoformat()})
    return {"project": store.project, "profile": profile or fp.profile, "end": end.isoformat(), "full": full,
            "seconds": round(time.perf_counter() - start, 3)}


def run_materialize(ctx: StageContext, profile: str | None = None, model: Any = "champion") -> dict[str, Any]:
    """The pipeline step: export every table, apply the repo, materialise incrementally."""
    fp = features_params(ctx.params)
    exported = export_tables(ctx, model=model)
    applied = apply(ctx, profile)
    done = materialize(ctx, profile)
    summary = {"dataset": ctx.spec.name, "profile": profile or fp.profile, "export": exported, "apply": applied, "materialize": done}
    from mmrec.io import write_json

    write_json(ctx.paths.reports / "features.json", summary)
    return summary


# -- historical (point-in-time) reads ---------------------------------------------------------------


def historical_features(ctx: StageContext, entity_df: pd.DataFrame, features: Sequence[str] | str,
                        full_feature_names: bool = True) -> pd.DataFrame:
    """`get_historical_features`: each row of `entity_df` joined with feature values as of its time.

    Args:
        entity_df: `user_id` and/or `item_id` plus `event_timestamp` (UTC).
        features: `view:feature` references, or a feature service name.
    """
    fp = features_params(ctx.params)
    if "event_timestamp" not in entity_df.columns:
        raise DataError(f"entity_df needs an 'event_timestamp' column; got {list(entity_df.columns)}")
    store = feature_store(ctx.paths, fp)
    refs: Any = store.get_feature_service(features) if isinstance(features, str) else list(features)
    return store.get_historical_features(entity_df=entity_df, features=refs, full_feature_names=full_feature_names).to_df()


def point_in_time_training_set(ctx: StageContext) -> pd.DataFrame:
    """The training interactions, each joined with item and user statistics as of its timestamp.

    A statistic stamped at time s aggregates only interactions before s, and Feast only joins
    rows with s <= the interaction's time, so no row sees its own or any later interaction.
    Exports the statistics and applies the repo first (the offline store needs nothing else).

    Feast is asked once per distinct (key, timestamp) and the answers are merged back onto the
    interactions: the Dask/file offline store collapses entity rows sharing a key and timestamp
    (feast-dev/feast#6787) and drops an entity row whose key only has rows after its time, so
    the result is aligned here instead. Before a key's first snapshot it had no interactions:
    counts are 0 and the day columns NaN.
    """
    from mmrec.data.splits import read_split_frames

    export_tables(ctx, parts=("stats",))
    apply(ctx)
    frames, _ = read_split_frames(ctx.paths, ctx.params.split.kind)
    train = frames.train
    out = pd.DataFrame({USER_ID: train[USER_ID].astype(str).to_numpy(), ITEM_ID: train[ITEM_ID].astype(str).to_numpy(),
                        "event_timestamp": pd.to_datetime(train[TIMESTAMP].to_numpy(), unit="s", utc=True)})
    for view, key in (("item_stats", ITEM_ID), ("user_stats", USER_ID)):
        entity_df = out[[key, "event_timestamp"]].drop_duplicates().reset_index(drop=True)
        got = historical_features(ctx, entity_df, [f"{view}:{f}" for f in ft.STAT_FIELDS])
        cols = [f"{view}__{f}" for f in ft.STAT_FIELDS]
        got = got[[key, "event_timestamp", *cols]].drop_duplicates([key, "event_timestamp"])
        got["event_timestamp"] = pd.to_datetime(got["event_timestamp"], utc=True)
        out = out.merge(got, on=[key, "event_timestamp"], how="left")
        for c in cols[:2]:
            out[c] = out[c].fillna(0).astype("int64")
    return out.sort_values(["event_timestamp", USER_ID, ITEM_ID], kind="stable").reset_index(drop=True)


# -- online reads ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendations:
    """A user's precomputed top-K: item ids best first, their scores, and the model behind them."""

    item_ids: list[str]
    scores: np.ndarray
    model: str
    model_version: str


def _vec(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float32)


def _connection_lost(exc: BaseException) -> bool:
    """Whether `exc` means the online store's server is gone (down, restarting, still loading)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - the [redis] extra is installed by make
        return False
    return isinstance(exc, RedisConnectionError | RedisTimeoutError)  # BusyLoadingError is a ConnectionError


def _sqlite_broken(exc: BaseException) -> bool:
    """Whether `exc` means the sqlite online store file is unusable (corrupt, not a database, no tables)."""
    import sqlite3

    return isinstance(exc, sqlite3.DatabaseError)


def _redacted(url: str | None) -> str:
    """host:port/db of a redis:// URL, without the password."""
    from urllib.parse import urlsplit

    if not url:
        return "redis"
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or ''}"


class OnlineFeatures:
    """Online reads for the API: plain Python/numpy values, None for what the store lacks.

    Args:
        dataset: `name:` of the dataset.yaml.
        workspace: the folder holding data/ (the working directory by default).
        profile: `sqlite` / `redis`; None: `features.profile` of `params`.
        params: a `FeaturesParams` or the whole `Params`; None reads `<workspace>/params.yaml`.

    Raises:
        StageError: nothing applied for this dataset and profile yet (names the command to run).
    """

    _db: Path | None = None
    _db_id: tuple[int, int] | None = None

    def __init__(self, dataset: str, workspace: str | os.PathLike[str] = ".", profile: str | None = None,
                 params: Any = None) -> None:
        if params is None:
            from mmrec.config import load_params

            params = load_params(Path(workspace) / "params.yaml")
        self.params = params if isinstance(params, FeaturesParams) else features_params(params)
        self.paths = DatasetPaths(dataset, Path(workspace))
        self.profile = profile or self.params.profile
        config = store_config(self.paths, self.params, self.profile)
        if not Path(str(config.registry.path)).is_file():
            raise StageError(
                f"{config.registry.path}: no Feast registry for dataset {dataset!r} (profile {self.profile}); "
                f"run `mmrec stage materialize --dataset PATH/dataset.yaml` first"
            )
        from feast import FeatureStore

        from mmrec.feature_reads import ViewReader

        self.store = FeatureStore(repo_path=str(config.repo_path), config=config)
        # sqlite: the file this reader serves, by identity (a deleted or replaced file is noticed)
        self._db = Path(str(config.online_store.path)) if self.profile == "sqlite" else None
        self.views_reader = ViewReader(self.store)  # the API's reads: one view per call, no SDK overhead

    @classmethod
    def from_context(cls, ctx: StageContext, profile: str | None = None) -> OnlineFeatures:
        return cls(ctx.spec.name, ctx.workspace, profile, features_params(ctx.params))

    # -- plumbing
    def get_online_features(self, features: Sequence[str], entity_rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
        """Feast's online read; a lost online store is `ServiceUnavailable` (the API answers 503).

        Nothing is cached across a failure: Feast's Redis client reconnects on the next read, so
        a restarted Redis is picked up without restarting the reader.
        """
        if self._db is not None:
            self._check_sqlite_file()
        try:
            return self.store.get_online_features(features=list(features), entity_rows=list(entity_rows)).to_dict()
        except Exception as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> Exception:
        """`exc` itself, or `ServiceUnavailable` when it means the online store is unusable: a
        corrupt sqlite file, or a store server that is gone."""
        if self._db is not None and _sqlite_broken(exc):
            return ServiceUnavailable(
                "sqlite", self._shown_db(),
                f"Feast online store {self._shown_db()} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
                "rebuild it with `mmrec stage materialize` (the API reopens it by itself, or POST /admin/reload?force=true)",
            )
        if not _connection_lost(exc):
            return exc
        where = _redacted(self.params.redis_url) if self.profile == "redis" else self.profile
        return ServiceUnavailable(
            self.profile, where,
            f"Feast online store ({self.profile} at {where}) is unreachable: {type(exc).__name__}: "
            f"{str(exc)[:200]}; retry shortly (the reader reconnects on its own)",
        )

    def _shown_db(self) -> str:
        """The sqlite file as messages show it: relative to the workspace when inside it."""
        assert self._db is not None
        try:
            return str(self._db.resolve().relative_to(self.paths.workspace.resolve()))
        except ValueError:
            return self._db.name

    def _check_sqlite_file(self) -> None:
        """Refuse reads while the online store file is missing; reopen it when it was replaced.

        Feast keeps one sqlite connection open: after the file is deleted it would go on reading
        the unlinked copy (and after a replace, the old one), and opening a missing path would
        silently create an empty database. A stat per read (~1 us) notices both.
        """
        assert self._db is not None
        try:
            st = os.stat(self._db)
        except FileNotFoundError:
            raise ServiceUnavailable(
                "sqlite", self._shown_db(),
                f"Feast online store {self._shown_db()} is missing (deleted?); rebuild it with "
                "`mmrec stage materialize` (the API picks it up by itself)",
            ) from None
        identity = (st.st_dev, st.st_ino)
        if self._db_id is None:
            self._db_id = identity
        elif identity != self._db_id:
            log.warning("Feast online store %s was replaced: reopening it", self._shown_db())
            online_store = self.store._get_provider().online_store
            if hasattr(online_store, "_conn"):
                online_store._conn = None  # not closed: a read in another thread may still use it
            self._db_id = identity

    def _read(self, key: str, ids: Sequence[str], view: str, fields: Sequence[str]) -> dict[str, list[Any]]:
        """`fields` of one view for `ids`: the same values as `get_online_features`, through the
        online store's `online_read` directly (mmrec/feature_reads.py: 4-5x less time per read)."""
        if self._db is not None:
            self._check_sqlite_file()
        ids = [str(i) for i in ids]
        if not ids:
            return {f: [] for f in fields}
        try:
            return self.views_reader.read(view, key, ids, fields)
        except Exception as exc:
            unavailable = self._unavailable(exc)
            if unavailable is exc:
                raise
            raise unavailable from exc

    def refresh(self) -> None:
        """Re-read the registry now (new feature services after a promotion and materialisation)."""
        self.store.refresh_registry()
        self.views_reader.forget()

    def ping(self) -> None:
        """Raise StageError unless the registry and the online store answer (for /ready)."""
        try:
            self.store.get_feature_view("user_recommendations")
            self._read(USER_ID, ["__mmrec_ping__"], "user_recommendations", ["model"])
        except Exception as exc:  # any backend failure means not ready
            raise StageError(f"Feast store for {self.paths.name!r} ({self.profile}) is not usable: {type(exc).__name__}: {exc}") from exc

    # -- the reads the API uses
    def recommendations(self, user_ids: Sequence[str]) -> list[Recommendations | None]:
        """The nightly top-K of each user, aligned with `user_ids`; None: no precomputed list."""
        r = self._read(USER_ID, user_ids, "user_recommendations", ["item_ids", "scores", "model", "model_version"])
        return [
            None if items is None else Recommendations(list(items), np.asarray(scores or [], np.float32), str(model), str(version))
            for items, scores, model, version in zip(r["item_ids"], r["scores"], r["model"], r["model_version"], strict=True)
        ]

    def item_embeddings(self, item_ids: Sequence[str], view: str = "fused") -> list[np.ndarray | None]:
        """Vectors of `view` (text, image, audio, video, fused, model), aligned with `item_ids`."""
        if view not in EMBEDDING_VIEWS:
            raise ConfigError(f"unknown embedding view {view!r}; expected one of {sorted(EMBEDDING_VIEWS)}")
        r = self._read(ITEM_ID, item_ids, EMBEDDING_VIEWS[view], ["embedding"])
        return [_vec(v) for v in r["embedding"]]

    def item_embedding_matrix(self, view: str = "fused") -> tuple[list[str], np.ndarray]:
        """Every exported item that has a `view` vector, as (ids, (n, d) float32): to build an index."""
        if view not in EMBEDDING_VIEWS:
            raise ConfigError(f"unknown embedding view {view!r}; expected one of {sorted(EMBEDDING_VIEWS)}")
        f = table_path(self.paths, EMBEDDING_VIEWS[view])
        ids = pd.read_parquet(f, columns=[ITEM_ID])[ITEM_ID].astype(str).tolist() if f.is_file() else []
        vecs = self.item_embeddings(ids, view)
        keep = [(i, v) for i, v in zip(ids, vecs, strict=True) if v is not None]
        if not keep:
            return [], np.zeros((0, 0), np.float32)
        return [i for i, _ in keep], np.stack([v for _, v in keep]).astype(np.float32)

    def views(self) -> list[str]:
        """Short names of the embedding views that hold vectors for this dataset."""
        out = []
        for short, table in EMBEDDING_VIEWS.items():
            f = table_path(self.paths, table)
            if f.is_file() and len(pd.read_parquet(f, columns=[ITEM_ID])):
                out.append(short)
        return out

    def user_features(self, user_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Factors (champion) and statistics of each user; None when the store knows neither."""
        emb = self._read(USER_ID, user_ids, "user_embedding", ["embedding", "model", "model_version"])
        stats = self._read(USER_ID, user_ids, "user_stats", list(ft.STAT_FIELDS))
        out: list[dict[str, Any] | None] = []
        for i in range(len(user_ids)):
            row = {"embedding": _vec(emb["embedding"][i]), "model": emb["model"][i], "model_version": emb["model_version"][i],
                   **{f: stats[f][i] for f in ft.STAT_FIELDS}}
            out.append(None if row["embedding"] is None and row["interactions"] is None else row)
        return out

    def item_stats(self, item_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Popularity (`interactions`, `interactions_window`) and recency (`days_since_last`) per item."""
        stats = self._read(ITEM_ID, item_ids, "item_stats", list(ft.STAT_FIELDS))
        return [None if stats["interactions"][i] is None else {f: stats[f][i] for f in ft.STAT_FIELDS} for i in range(len(item_ids))]
