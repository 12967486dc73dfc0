"""Export the feature tables: build them from the pipeline's artifacts and write them for Feast.

`export_tables` builds the tables of `mmrec.feast.tables` from the feature files, the split, the
champion model and the latest recommendations, and writes them to `data/<name>/feast/tables/`,
with `models.json` listing the registered model versions (one feature service each). A table
whose content did not change keeps its timestamps and is not rewritten, so
`materialize_incremental` has nothing new to load for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from mmrec.constants import ITEM_ID, MODALITIES, TIMESTAMP, USER_ID
from mmrec.data.splits import read_split_frames
from mmrec.encoders.store import read_features
from mmrec.errors import DataError, ModelError, StageError
from mmrec.feast import tables as ft
from mmrec.feast.store import feast_dir, table_path, tables_dir, write_table
from mmrec.io import write_json
from mmrec.models import load_model
from mmrec.models.item_features import feature_path
from mmrec.models.registry import get_model_class
from mmrec.params.feast import FeaturesParams, features_params
from mmrec.tracking.registry import load_champion, registry_state
from mmrec.tracking.store import registered_model_name

if TYPE_CHECKING:
    from mmrec.context import StageContext
    from mmrec.models.base import Recommender

log = logging.getLogger(__name__)


def now_utc() -> pd.Timestamp:
    return pd.Timestamp(datetime.now(UTC)).floor("s")


def _content_hash(df: pd.DataFrame, table: str) -> str:
    """Hash of a table's content, timestamps of the not-yet-stamped rows excluded (they are NaT)."""
    import pyarrow as pa

    t = pa.Table.from_pandas(
        df.drop(columns=[ft.CREATED]).reset_index(drop=True),
        schema=ft.arrow_schema(table).remove(ft.arrow_schema(table).get_field_index(ft.CREATED)),
        preserve_index=False,
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as writer:
        writer.write_table(t)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _interactions(ctx: StageContext, fp: FeaturesParams) -> pd.DataFrame:
    """user_id, item_id, timestamp (unix seconds) the statistics summarise."""
    if fp.stats_from == "train":
        frames, _ = read_split_frames(ctx.paths, ctx.params.split.kind)
        return frames.train[[USER_ID, ITEM_ID, TIMESTAMP]]
    f = ctx.paths.validated_table("interactions")
    if not f.is_file():
        raise StageError(f"{f}: validated interactions missing; run `mmrec stage validate` first")
    df = pd.read_parquet(f, columns=[USER_ID, ITEM_ID, TIMESTAMP])
    ts = df[TIMESTAMP]
    if pd.api.types.is_datetime64_any_dtype(ts):
        ts = (pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return pd.DataFrame(
        {USER_ID: df[USER_ID].astype(str), ITEM_ID: df[ITEM_ID].astype(str), TIMESTAMP: ts.astype("int64")}
    )


def _embedding_tables(ctx: StageContext) -> tuple[dict[str, pd.DataFrame], dict[str, tuple[list[str], np.ndarray]]]:
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
    try:
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
    if (
        isinstance(uf, np.ndarray)
        and isinstance(itf, np.ndarray)
        and model.user_ids is not None
        and model.item_ids is not None
    ):
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
    now = now or now_utc()
    folder = tables_dir(ctx.paths)
    manifest_file = folder / "export.json"
    manifest = read_manifest(manifest_file)
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
            built["user_embedding"], built["item_model_embedding"] = (
                ft.empty("user_embedding"),
                ft.empty("item_model_embedding"),
            )
    if "recommendations" in parts:
        built["user_recommendations"] = _recommendations(ctx)

    summary: dict[str, Any] = {"path": str(folder), "tables": {}}
    for table in ft.TABLES:
        path = table_path(ctx.paths, table)
        if table not in built:
            if not path.is_file():
                write_table(path, ft.empty(table), table)
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
            write_table(path, df, table)
            manifest["tables"][table] = {"hash": digest, "event_timestamp": stamp.isoformat(), "rows": len(df)}
        summary["tables"][table] = {
            "rows": len(df),
            "changed": changed,
            "event_timestamp": manifest["tables"][table]["event_timestamp"],
        }
    if "model" in parts or versions is not None:
        if versions is None:
            versions = model_versions(ctx, champion_version, has_factors)

        write_json(
            feast_dir(ctx.paths) / "models.json",
            {"registered_model": registered_model_name(ctx.spec.name), "versions": versions},
        )
        summary["versions"] = versions

    write_json(manifest_file, manifest)
    return summary


def read_manifest(path: Path) -> dict[str, Any]:
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
