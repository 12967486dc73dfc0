"""Ingestion into the warehouse: normalised parquet tables queried through DuckDB.

The warehouse of a dataset is `data/<name>/warehouse/`: one parquet file per contract table, the
rows no parser could read (`<table>_rejects.parquet`), and `manifest.json` (source files and
their sha256, row counts, data root). It is replaced as a whole only after every table was read,
so a failed ingest leaves the previous warehouse intact; the raw folder is only ever read.
DuckDB reads the parquet files in place (`connect`), so there is no database file to lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrec.config import IngestParams
from mmrec.data.adapters import read_tables_counted
from mmrec.data.contract import DatasetSpec
from mmrec.errors import StageError
from mmrec.io import atomic_dir
from mmrec.paths import DatasetPaths

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    dataset: str
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "tables": self.tables}


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def ingest_dataset(spec: DatasetSpec, paths: DatasetPaths, params: IngestParams | None = None) -> IngestReport:
    """Read every table of `spec`, normalise it and write the warehouse atomically.

    Raises:
        DataError / ConfigError: a file is missing, empty or lacks a mapped column (nothing written).
    """
    from mmrec.constants import USER_ID
    from mmrec.privacy.forget_list import ForgetList, drop_forgotten, drop_forgotten_rejects

    tables = read_tables_counted(spec)
    # Users who were forgotten (`mmrec forget`) never enter the warehouse again: the raw folder
    # still has their rows, the forget list (pseudonyms only) drops them here, counted.
    forget = ForgetList.load(paths)
    report = IngestReport(spec.name)
    with atomic_dir(paths.warehouse) as tmp:
        for name, (frame, rejects, source, counts) in tables.items():
            if counts.records != len(frame) + len(
                rejects
            ):  # checked before the forget list drops rows  # the reader's own books must balance
                raise StageError(
                    f"{source}: {counts.records} data records read but {len(frame)} rows + {len(rejects)} rejects "
                    f"came out of normalisation; this is a bug in mmrec"
                )
            frame, forgotten = drop_forgotten(frame, USER_ID, forget)
            if name != "items":
                rejects, forgotten_rejects = drop_forgotten_rejects(rejects, forget)
                forgotten += forgotten_rejects
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
            if len(rejects):
                rejects.to_parquet(tmp / f"{name}_rejects.parquet", index=False)
            report.tables[name] = {
                "source": str(source),
                "sha256": file_sha256(source),
                "rows": int(len(frame)),
                "rejected": int(len(rejects)),
                "forgotten": forgotten,  # rows of forgotten users dropped (mmrec.privacy)
                # Where every line of the source went; validation checks its rows against
                # `source_rows` (data records the reader saw, counted apart from the parser).
                "source_rows": int(counts.records),
                "lines": counts.to_dict(),
            }
            log.info(
                "ingested %s: %d rows, %d rejected, %d of forgotten users dropped (%s)",
                name,
                len(frame),
                len(rejects),
                forgotten,
                source,
            )
        manifest = {
            "dataset": spec.name,
            "root": str(spec.root_path),
            "spec": spec.spec_path,
            "modalities": spec.modalities,
            "tables": report.tables,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def read_manifest(paths: DatasetPaths) -> dict[str, Any]:
    f = paths.warehouse / "manifest.json"
    if not f.is_file():
        raise StageError(f"{f}: no warehouse for dataset {paths.name!r}; run `mmrec stage ingest` first")
    return json.loads(f.read_text())


def connect(paths: DatasetPaths, validated: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per table over the parquet files.

    Args:
        validated: views over the validated tables (what models use) instead of the raw warehouse.
    """
    import duckdb

    con = duckdb.connect()
    folder = paths.validated if validated else paths.warehouse
    for f in sorted(folder.glob("*.parquet")):
        path = str(f.resolve()).replace("'", "''")
        con.execute(f"CREATE VIEW \"{f.stem}\" AS SELECT * FROM read_parquet('{path}')")
    return con
