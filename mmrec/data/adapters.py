"""Read a dataset's raw files into contract-shaped DataFrames, keeping every bad line as a reject.

Reading never fails on a single bad row: a line with the wrong number of fields, bytes that are
not valid in the declared encoding, or a JSON line that does not parse becomes a reject row
(source row number, raw text, reason) that validation puts in quarantine. Only problems that make
the whole file unusable (missing file, no header, a mapped column absent) raise, naming the
file, the column and the fix.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmrec.constants import EVENT, ITEM_ID, RATING, REASON, ROW_HASH, SOURCE_ROW, TEXT, TIMESTAMP, USER_ID, WEIGHT
from mmrec.data.contract import DatasetSpec, InteractionsSpec, ItemsSpec, TableSpec, UsersSpec
from mmrec.data.reader import LineCounts, Reject, read_delimited_records, read_jsonl_records, recover_json_field
from mmrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

RAW = "raw"
LINE = "line"  # 1-based physical line of a reject in its file (the header is line 1)
_CHUNK_ROWS = 50_000  # rows are moved into the column lists in chunks of this size
TIMESTAMP_RAW = "timestamp_raw"  # raw values kept next to parsed ones: errors quote what the file said
REJECT_COLUMNS = [SOURCE_ROW, LINE, RAW, REASON]
_RESERVED = {
    USER_ID,
    ITEM_ID,
    TIMESTAMP,
    TIMESTAMP_RAW,
    RATING,
    WEIGHT,
    EVENT,
    ROW_HASH,
    SOURCE_ROW,
    TEXT,
    "image",
    "audio",
    "video",
}


@dataclass(frozen=True)
class RawTable:
    """A file read as strings: `frame` has the file's columns + source_row; `rejects` the bad lines.

    `counts` says where every line of the file went (see `mmrec.data.reader.LineCounts`);
    `counts.records == len(frame) + len(rejects)` always.
    """

    frame: pd.DataFrame
    rejects: pd.DataFrame
    path: Path
    counts: LineCounts = field(default_factory=LineCounts)


def _empty_rejects() -> pd.DataFrame:
    return pd.DataFrame(
        {
            SOURCE_ROW: pd.Series(dtype="int64"),
            LINE: pd.Series(dtype="int64"),
            RAW: pd.Series(dtype=object),
            REASON: pd.Series(dtype=object),
        }
    )


def _id_columns(spec: TableSpec) -> dict[str, str]:
    """Contract id column -> the file's column, for the ids a reject's line may still reveal."""
    return {c: spec.columns[c] for c in (USER_ID, ITEM_ID) if c in spec.columns}


def _recovered_id(value: object) -> str | None:
    """An id taken from a bad line, if it is clean enough to name the row (no bad bytes, short)."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or len(text) > 256 or "\ufffd" in text or "\n" in text or "\\0" in text:
        return None
    return text


def _rejects_frame(rejects: list[Reject], ids: dict[str, str], header: list[str] | None) -> pd.DataFrame:
    """Rejects with their line numbers and, where the line allows it, the ids of the row.

    Recovering the id lets validation tell a user *why* the rows that refer to it were
    quarantined (the root cause) instead of "not in items table".
    """
    if not rejects:
        out = _empty_rejects()
        for contract in ids:
            out[contract] = pd.Series(dtype=object)
        return out
    out = pd.DataFrame(
        {
            SOURCE_ROW: np.asarray([r.source_row for r in rejects], dtype=np.int64),
            LINE: np.asarray([r.line for r in rejects], dtype=np.int64),
            RAW: pd.Series([r.raw for r in rejects], dtype=object),
            REASON: pd.Series([f"line {r.line}: {r.reason}" for r in rejects], dtype=object),
        }
    )
    for contract, col in ids.items():
        values: list[str | None] = []
        for r in rejects:
            value = None
            if header is not None and r.fields is not None and col in header:
                pos = header.index(col)
                value = r.fields[pos] if pos < len(r.fields) else None
            elif header is None:
                value = recover_json_field(r.raw, col)
            values.append(_recovered_id(value))
        out[contract] = pd.Series(values, dtype=object)
    return out


def _read_delimited(path: Path, spec: TableSpec) -> RawTable:
    header, records, counts = read_delimited_records(path, spec.encoding, spec.sep())
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{path}: duplicate column name(s) {dupes} in the header")
    # Rows arrive in chunks and are moved into one list per column (C-level zip), so memory is
    # the strings themselves plus one pointer per cell, not a second copy of every row.
    columns: list[list[str]] = [[] for _ in header]
    rows: list[list[str]] = []
    source_rows = array("q")  # 8 bytes per row, not a Python int each
    rejects: list[Reject] = []

    def flush() -> None:
        if not rows:
            return
        for col, values in zip(columns, zip(*rows, strict=True), strict=True):
            col.extend(values)
        rows.clear()

    for row_no, _line, result in records:
        if isinstance(result, Reject):
            rejects.append(result)
            continue
        rows.append(result)
        source_rows.append(row_no)
        if len(rows) >= _CHUNK_ROWS:
            flush()
    flush()
    data: dict[str, Any] = {}
    for name in header:
        col = columns.pop(0)
        values = np.empty(len(col), dtype=object)
        values[:] = col
        data[name] = values
        del col
    frame = pd.DataFrame(data, copy=False)
    frame[SOURCE_ROW] = np.frombuffer(source_rows, dtype=np.int64).copy()
    return RawTable(frame, _rejects_frame(rejects, _id_columns(spec), header), path, counts)


def _read_jsonl(path: Path, spec: TableSpec) -> RawTable:
    records, source_rows, rejects = [], [], []
    stream, counts = read_jsonl_records(path, spec.encoding)
    for line_no, obj in stream:
        if isinstance(obj, Reject):
            rejects.append(obj)
            continue
        records.append({k: (None if v is None else str(v)) for k, v in obj.items()})
        source_rows.append(line_no)
    if not records and not rejects:
        raise DataError(f"{path}: file is empty (expected one JSON object per line)")
    frame = pd.DataFrame.from_records(records).astype(object) if records else pd.DataFrame()
    frame[SOURCE_ROW] = np.asarray(source_rows, dtype=np.int64)
    return RawTable(frame, _rejects_frame(rejects, _id_columns(spec), None), path, counts)


def _read_parquet(path: Path, spec: TableSpec) -> RawTable:
    """Stream the row groups; the file's own row count is checked against the rows read."""
    import pyarrow.parquet as pq

    what = "re-export it, or point `path:` in dataset.yaml at a valid parquet file"
    try:
        pf = pq.ParquetFile(path)
        expected = pf.metadata.num_rows
        batches = [b.to_pandas() for b in pf.iter_batches(batch_size=_CHUNK_ROWS)]
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read parquet file (corrupt or not parquet: {exc}); {what}") from exc
    frame = pd.concat(batches, ignore_index=True) if batches else pf.schema_arrow.empty_table().to_pandas()
    if len(frame) != expected:
        raise DataError(f"{path}: parquet metadata says {expected} rows but {len(frame)} were read; {what}")
    frame = frame.astype(object).where(frame.notna(), None)
    frame[SOURCE_ROW] = np.arange(1, len(frame) + 1, dtype=np.int64)
    counts = LineCounts(lines=expected, records=expected, record_lines=expected, parsed=expected)
    return RawTable(frame, _rejects_frame([], _id_columns(spec), None), path, counts)


def read_raw(path: Path, spec: TableSpec) -> RawTable:
    """Read one raw file as strings, whatever its format."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (check `path:` in dataset.yaml and the data root)")
    fmt = spec.file_format()
    if fmt in ("csv", "tsv"):
        return _read_delimited(path, spec)
    if fmt == "jsonl":
        return _read_jsonl(path, spec)
    return _read_parquet(path, spec)


def _require_columns(raw: RawTable, needed: dict[str, str], table: str) -> None:
    available = [c for c in raw.frame.columns if c != SOURCE_ROW]
    for what, col in needed.items():
        if col not in raw.frame.columns:
            hint = ""
            if len(available) == 1:  # one column holding the others: the file has another delimiter
                found = [d for d in (";", "\t", "|", ",") if d in str(available[0])]
                if found:
                    hint = f" (the file looks {found[0]!r}-separated: set `delimiter: {found[0]!r}` for this table)"
            raise ConfigError(
                f"dataset.yaml {table}.{what} maps to column {col!r}, which {raw.path.name} does not have; "
                f"its columns are {available}{hint}"
            )


def _clean_str(s: pd.Series) -> pd.Series:
    """Strip whitespace; empty strings become None (missing is data, not an empty string)."""
    s = s.astype(object).where(s.notna(), None)
    out = s.map(lambda v: None if v is None else (str(v).strip() or None))
    return out.astype(object)


def row_hashes(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """sha1 of the normalised row (values joined by the unit separator), as hex."""
    if df.empty:
        return pd.Series([], dtype=str, index=df.index)
    joined = df[columns[0]].astype(str)
    for col in columns[1:]:
        joined = joined + "\x1f" + df[col].astype(str)
    return joined.map(lambda s: hashlib.sha1(s.encode("utf-8")).hexdigest())


def epoch_to_utc(num: pd.Series, unit: str = "s") -> pd.Series:
    """Epoch numbers to UTC timestamps; NaN and out-of-range values become NaT.

    Only the finite values reach pandas' float-epoch conversion: given NaNs it casts them to
    int64 (undefined values) and, depending on what memory held, its rounding step overflowed
    with a FloatingPointError (seen intermittently in CI on a table with 200+ bad timestamps),
    and a value beyond datetime64's range raised OverflowError despite errors="coerce".
    """
    num = pd.to_numeric(num, errors="coerce").astype("float64")
    out = pd.Series(pd.NaT, index=num.index, dtype="datetime64[ns, UTC]")
    limit = 9.2e9 if unit == "s" else 9.2e12  # datetime64[ns] spans about +-292 years
    values = num.to_numpy()
    ok = np.isfinite(values) & (np.abs(np.nan_to_num(values)) < limit)
    if ok.any():
        out[ok] = pd.to_datetime(num[ok], unit=unit, utc=True, errors="coerce")
    return out


def _parse_timestamps(raw: pd.Series, fmt: str) -> pd.Series:
    if fmt in ("unix_s", "unix_ms"):
        return epoch_to_utc(pd.to_numeric(raw, errors="coerce"), "s" if fmt == "unix_s" else "ms")
    return pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")


def normalise_interactions(raw: RawTable, spec: InteractionsSpec) -> pd.DataFrame:
    _require_columns(raw, {f"columns.{k}": v for k, v in spec.columns.items()}, "interactions")
    f = raw.frame
    out = pd.DataFrame(index=f.index)
    out[USER_ID] = _clean_str(f[spec.columns[USER_ID]])
    out[ITEM_ID] = _clean_str(f[spec.columns[ITEM_ID]])
    ts_raw = _clean_str(f[spec.columns[TIMESTAMP]])
    out[TIMESTAMP] = _parse_timestamps(ts_raw, spec.timestamp_format)
    out[TIMESTAMP_RAW] = ts_raw
    for col in (RATING, WEIGHT):
        if col in spec.columns:
            raw_values = _clean_str(f[spec.columns[col]])
            out[col] = pd.to_numeric(raw_values, errors="coerce").astype("float64")
            out[f"{col}_raw"] = raw_values  # kept so a quarantine reason can quote the bad value
    if EVENT in spec.columns:
        out[EVENT] = _clean_str(f[spec.columns[EVENT]])
    hash_cols = [c for c in (USER_ID, ITEM_ID, TIMESTAMP_RAW, "rating_raw", "weight_raw", EVENT) if c in out.columns]
    out[ROW_HASH] = row_hashes(out, hash_cols)
    out[SOURCE_ROW] = f[SOURCE_ROW].astype("int64")
    return out.reset_index(drop=True)


def build_document(fields: dict[str, pd.Series]) -> pd.Series:
    """One text document per row: `name: value` lines in configured order, missing fields skipped.

    Field names stay in the document so a text encoder can tell a title from a description.
    """
    if not fields:
        return pd.Series(dtype=object)
    frame = pd.DataFrame(fields)

    def doc(row: pd.Series) -> str | None:
        lines = [f"{name}: {val}" for name, val in row.items() if val is not None]
        return "\n".join(lines) if lines else None

    return frame.apply(doc, axis=1).astype(object)


def normalise_items(raw: RawTable, spec: ItemsSpec) -> pd.DataFrame:
    needed = {f"columns.{k}": v for k, v in spec.columns.items()}
    needed.update({f"text_fields.{k}": v for k, v in spec.text_fields.items()})
    needed.update({f"media.{k}": v for k, v in spec.media_columns.items()})
    needed.update({f"metadata[{i}]": v for i, v in enumerate(spec.metadata)})
    _require_columns(raw, needed, "items")
    clash = sorted(set(spec.metadata) & (_RESERVED | {f"text_{k}" for k in spec.text_fields}))
    if clash:
        raise ConfigError(
            f"dataset.yaml items.metadata column(s) {clash} clash with contract column names; rename them"
        )
    f = raw.frame
    out = pd.DataFrame(index=f.index)
    out[ITEM_ID] = _clean_str(f[spec.columns[ITEM_ID]])
    fields = {name: _clean_str(f[col]) for name, col in spec.text_fields.items()}
    if fields:
        out[TEXT] = build_document(fields)
        for name, values in fields.items():
            out[f"text_{name}"] = values
    for modality, col in spec.media_columns.items():
        out[modality] = _clean_str(f[col])
    for col in spec.metadata:
        out[col] = _clean_str(f[col])
    out[ROW_HASH] = row_hashes(out, [c for c in out.columns])
    out[SOURCE_ROW] = f[SOURCE_ROW].astype("int64")
    return out.reset_index(drop=True)


def normalise_users(raw: RawTable, spec: UsersSpec) -> pd.DataFrame:
    needed = {f"columns.{k}": v for k, v in spec.columns.items()}
    needed.update({f"attributes[{i}]": v for i, v in enumerate(spec.attributes)})
    _require_columns(raw, needed, "users")
    clash = sorted(set(spec.attributes) & _RESERVED)
    if clash:
        raise ConfigError(
            f"dataset.yaml users.attributes column(s) {clash} clash with contract column names; rename them"
        )
    f = raw.frame
    out = pd.DataFrame(index=f.index)
    out[USER_ID] = _clean_str(f[spec.columns[USER_ID]])
    for col in spec.attributes:
        out[col] = _clean_str(f[col])
    out[ROW_HASH] = row_hashes(out, list(out.columns))
    out[SOURCE_ROW] = f[SOURCE_ROW].astype("int64")
    return out.reset_index(drop=True)


def read_tables_counted(spec: DatasetSpec) -> dict[str, tuple[pd.DataFrame, pd.DataFrame, Path, LineCounts]]:
    """Every table of the dataset: name -> (normalised frame, rejects, source path, line counts)."""
    out: dict[str, tuple[pd.DataFrame, pd.DataFrame, Path, LineCounts]] = {}
    plan = [("interactions", spec.interactions, normalise_interactions), ("items", spec.items, normalise_items)]
    if spec.users is not None:
        plan.append(("users", spec.users, normalise_users))
    for name, table_spec, normalise in plan:
        path = spec.table_path(name)
        raw = read_raw(path, table_spec)
        frame = normalise(raw, table_spec)  # type: ignore[operator]
        if name == "items" and spec.items.media_templates:
            frame = with_template_media(frame, spec)
        out[name] = (frame, raw.rejects, path, raw.counts)
    return out


def with_template_media(items: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Fill the media columns that dataset.yaml gives as templates (`{template: "images/{item_id}.jpg"}`).

    Items without a file get no path (missing media, not an error); the counts are logged. The
    row hash is recomputed, so adding an image re-encodes that item only.
    """
    from mmrec.data.contract import template_media_paths

    out = items.copy()
    for modality, template in spec.items.media_templates.items():
        paths, counts = template_media_paths(out[ITEM_ID].tolist(), template, spec.root_path)
        out[modality] = pd.Series(paths, index=out.index, dtype=object)
        log.info(
            "items.media.%s template %r: %d items have a file, %d have none%s",
            modality,
            template,
            counts["found"],
            counts["missing"],
            f", {counts['unsafe']} ids would leave the data root (no path)" if counts["unsafe"] else "",
        )
    cols = [c for c in out.columns if c not in (ROW_HASH, SOURCE_ROW)]
    out[ROW_HASH] = row_hashes(out, cols)
    return out


def read_tables(spec: DatasetSpec) -> dict[str, tuple[pd.DataFrame, pd.DataFrame, Path]]:
    """Every table of the dataset: name -> (normalised frame, rejects, source path)."""
    return {name: (frame, rej, path) for name, (frame, rej, path, _) in read_tables_counted(spec).items()}
