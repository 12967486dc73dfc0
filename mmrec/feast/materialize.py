"""Load the exported tables into the online store (`materialize_incremental`), and the pipeline step doing export + apply + materialise."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from mmrec.feast.export import export_tables, now_utc, read_manifest
from mmrec.feast.store import apply, feature_store, tables_dir
from mmrec.io import write_json
from mmrec.params.feast import features_params

if TYPE_CHECKING:
    from mmrec.context import StageContext


def materialize(ctx: StageContext, profile: str | None = None, full: bool = False) -> dict[str, Any]:
    """Load new rows into the online store: `materialize_incremental` up to now (`full`: everything)."""
    fp = features_params(ctx.params)
    store = feature_store(ctx.paths, fp, profile)
    end = now_utc() + pd.Timedelta(seconds=1)
    manifest_file = tables_dir(ctx.paths) / "export.json"
    manifest = read_manifest(manifest_file)
    # rows stamped in the future (synthetic clocks, data ends ahead of now) must still be served
    end = max(
        [end, *[pd.Timestamp(t["event_timestamp"]) + pd.Timedelta(seconds=1) for t in manifest["tables"].values()]]
    )
    start = time.perf_counter()
    if full:
        store.materialize(start_date=datetime(1970, 1, 2, tzinfo=UTC), end_date=end.to_pydatetime())
    else:
        store.materialize_incremental(end_date=end.to_pydatetime())
    if manifest_file.is_file():
        manifest = read_manifest(manifest_file)
        until = max(
            [end, *([pd.Timestamp(manifest["materialized_until"])] if manifest.get("materialized_until") else [])]
        )
        write_json(manifest_file, {**manifest, "materialized_until": until.isoformat()})
    return {
        "project": store.project,
        "profile": profile or fp.profile,
        "end": end.isoformat(),
        "full": full,
        "seconds": round(time.perf_counter() - start, 3),
    }


def run_materialize(ctx: StageContext, profile: str | None = None, model: Any = "champion") -> dict[str, Any]:
    """The pipeline step: export every table, apply the repo, materialise incrementally."""
    fp = features_params(ctx.params)
    exported = export_tables(ctx, model=model)
    applied = apply(ctx, profile)
    done = materialize(ctx, profile)
    summary = {
        "dataset": ctx.spec.name,
        "profile": profile or fp.profile,
        "export": exported,
        "apply": applied,
        "materialize": done,
    }

    write_json(ctx.paths.reports / "features.json", summary)
    return summary
