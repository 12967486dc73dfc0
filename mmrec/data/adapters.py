"""Read a dataset's raw files into contract-shaped DataFrames, keeping every bad line as a reject.

Reading never fails on a single bad row: a line with the wrong number of fields, bytes that are
not valid in the declared encoding, or a JSON line that does not parse becomes a reject row
(source row number, raw text, reason) that validation puts in quarantine. Only problems that make
the whole file unusable (missing file, no header, a mapped column absent) raise, naming the
file, the column and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.constants import (
    EVENT,
    ITEM_ID,
    RATING,
    REASON,
    ROW_HASH,
    SOURCE_ROW,
    TEXT,
    TIMESTAMP,
    USER_ID,
    WEIGHT,
)
from mmrec.data.contract import DatasetSpec, InteractionsSpec, ItemsSpec, TableSpec, UsersSpec
from mmrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

RAW = "raw"
TIMESTAMP_RAW = "timestamp_raw"  # raw values kept next to parsed ones: errors quote what the file said
REJECT_COLUMNS = [SOURCE_ROW, RAW, REASON]
_RESERVED = {USER_ID, ITEM_ID, TIMESTAMP, TIMESTAMP_RAW, RATING, WEIGHT, EVENT, ROW_HASH, SOURCE_ROW, TEXT, "image", "audio", "video"}


@dataclass(frozen=True)
class RawTable:
    """A file read as strings: `frame` has the file's columns + source_row; `rejects` the bad lines."""

    frame: pd.DataFrame
    rejects: pd.DataFrame
    path: Path


def _empty_rejects() -> pd.DataFrame:
    return pd.DataFrame({SOURCE_ROW: pd.Series(dtype="int64"), RAW: pd.Series(dtype=str), REASON: pd.Series(dtype=str)})


def _has_bad_bytes(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def _read_delimited(path: Path, spec: TableSpec) -> RawTable:
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: file is empty (expected a header row and data rows)")
    encoding = "utf-8-sig" if spec.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else spec.encoding
    try:
        text = data.decode(encoding, errors="surrogateescape")
    except LookupError as exc:
        raise ConfigError(f"{path}: unknown encoding {spec.encoding!r} in dataset.yaml") from exc
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=spec.sep())
    try:
        header = next(reader)
    except StopIteration as exc:  # pragma: no cover - guarded by the empty check above
        raise DataError(f"{path}: no header row") from exc
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{path}: duplicate column name(s) {dupes} in the header")
    rows: list[list[str]] = []
    source_rows: list[int] = []
    rejects: list[tuple[int, str, str]] = []
    n_fields = len(header)
    row_no = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row_no += 1
            rejects.append((row_no, "", f"unparseable line: {exc}"))
            continue
        row_no += 1
        if not fields or all(not f.strip() for f in fields):
            continue  # blank line
        raw = spec.sep().join(fields)
        if len(fields) != n_fields:
            rejects.append((row_no, raw, f"malformed row: expected {n_fields} fields ({spec.sep()!r}-separated), found {len(fields)}"))
            continue
        if _has_bad_bytes(raw):
            rejects.append(
                (
                    row_no,
                    raw.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace"),
                    f"bytes not valid {spec.encoding}; set `encoding:` for this table in dataset.yaml (e.g. latin-1)",
                )
            )
            continue
        rows.append(fields)
        source_rows.append(row_no)
    frame = pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame(columns=header, dtype=object)
    frame[SOURCE_ROW] = np.asarray(source_rows, dtype=np.int64)
    rej = pd.DataFrame(rejects, columns=REJECT_COLUMNS) if rejects else _empty_rejects()
    rej[SOURCE_ROW] = rej[SOURCE_ROW].astype("int64")
    return RawTable(frame, rej, path)


def _read_jsonl(path: Path, spec: TableSpec) -> RawTable:
    records, source_rows, rejects = [], [], []
    with path.open("rb") as fh:
        for row_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.decode(spec.encoding))
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as exc:
                rejects.append((row_no, line.decode("utf-8", errors="replace").rstrip("\n"), f"invalid JSON line: {exc}"))
                continue
            records.append({k: (None if v is None else str(v)) for k, v in obj.items()})
            source_rows.append(row_no)
    if not records and not rejects:
        raise DataError(f"{path}: file is empty (expected one JSON object per line)")
    frame = pd.DataFrame.from_records(records).astype(object) if records else pd.DataFrame()
    frame[SOURCE_ROW] = np.asarray(source_rows, dtype=np.int64)
    rej = pd.DataFrame(rejects, columns=REJECT_COLUMNS) if rejects else _empty_rejects()
    return RawTable(frame, rej, path)


def _read_parquet(path: Path) -> RawTable:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read parquet file: {exc}") from exc
    frame = frame.astype(object).where(frame.notna(), None)
    frame[SOURCE_ROW] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return RawTable(frame, _empty_rejects(), path)


def read_raw(path: Path, spec: TableSpec) -> RawTable:
    """Read one raw file as strings, whatever its format."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (check `path:` in dataset.yaml and the data root)")
    fmt = spec.file_format()
    if fmt in ("csv", "tsv"):
        return _read_delimited(path, spec)
    if fmt == "jsonl":
        return _read_jsonl(path, spec)
    return _read_parquet(path)


def _require_columns(raw: RawTable, needed: dict[str, str], table: str) -> None:
    available = [c for c in raw.frame.columns if c != SOURCE_ROW]
    for what, col in needed.items():
        if col not in raw.frame.columns:
            raise ConfigError(
                f"dataset.yaml {table}.{what} maps to column {col!r}, which {raw.path.name} does not have; "
                f"its columns are {available}"
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
        raise ConfigError(f"dataset.yaml items.metadata column(s) {clash} clash with contract column names; rename them")
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
        raise ConfigError(f"dataset.yaml users.attributes column(s) {clash} clash with contract column names; rename them")
    f = raw.frame
    out = pd.DataFrame(index=f.index)
    out[USER_ID] = _clean_str(f[spec.columns[USER_ID]])
    for col in spec.attributes:
        out[col] = _clean_str(f[col])
    out[ROW_HASH] = row_hashes(out, list(out.columns))
    out[SOURCE_ROW] = f[SOURCE_ROW].astype("int64")
    return out.reset_index(drop=True)


def read_tables(spec: DatasetSpec) -> dict[str, tuple[pd.DataFrame, pd.DataFrame, Path]]:
    """Every table of the dataset: name -> (normalised frame, rejects, source path)."""
    out: dict[str, tuple[pd.DataFrame, pd.DataFrame, Path]] = {}
    plan = [("interactions", spec.interactions, normalise_interactions), ("items", spec.items, normalise_items)]
    if spec.users is not None:
        plan.append(("users", spec.users, normalise_users))
    for name, table_spec, normalise in plan:
        path = spec.table_path(name)
        raw = read_raw(path, table_spec)
        frame = normalise(raw, table_spec)  # type: ignore[operator]
        if name == "items" and spec.items.media_templates:
            frame = with_template_media(frame, spec)
        out[name] = (frame, raw.rejects, path)
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
        log.info("items.media.%s template %r: %d items have a file, %d have none%s", modality, template,
                 counts["found"], counts["missing"],
                 f", {counts['unsafe']} ids would leave the data root (no path)" if counts["unsafe"] else "")
    cols = [c for c in out.columns if c not in (ROW_HASH, SOURCE_ROW)]
    out[ROW_HASH] = row_hashes(out, cols)
    return out
