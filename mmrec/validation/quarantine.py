"""Quarantine tables: every row that failed validation, with all its columns and the reason.

`data/<name>/quarantine/<table>.parquet` has the warehouse columns plus `raw` (the unparsed line,
for rows ingest could not read at all), `reason` (human readable, naming the column and value)
and `check` (the check name(s) from the report). A row that failed several checks appears once,
with the reasons joined by "; " and the checks by ", ". Ingest rejects
(`warehouse/<table>_rejects.parquet`) are folded in with check `ingest_parse` (their reason
starts with the file's line number, and their ids are filled in where ingest could recover them
from the line), so the quarantine is the one place to look for every row that did not make it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.constants import ITEM_ID, REASON, SOURCE_ROW, USER_ID
from mmrec.errors import DataError

RAW = "raw"
CHECK = "check"
INGEST_CHECK = "ingest_parse"
QUARANTINE_EXTRA = [RAW, REASON, CHECK]
RECOVERED_IDS = (USER_ID, ITEM_ID)  # id columns an ingest reject may carry, recovered from its line

RowFailures = Mapping[int, Sequence[tuple[str, str]]]
"""Row position -> [(check name, reason), ...] in check order."""


def read_rejects(path: Path) -> pd.DataFrame | None:
    """The ingest rejects of one table (source_row, raw, reason), or None when there are none."""
    if not path.is_file():
        return None
    try:
        rejects = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: cannot read ingest rejects ({exc}); re-run `mmrec stage ingest`") from exc
    missing = [c for c in (SOURCE_ROW, REASON) if c not in rejects.columns]
    if missing:
        raise DataError(f"{path}: ingest rejects lack column(s) {missing}; re-run `mmrec stage ingest`")
    if RAW not in rejects.columns:
        rejects[RAW] = None
    return rejects if len(rejects) else None


def _nulls_like(dtype: object, n: int) -> pd.Series:
    """n missing values in a dtype that can hold them, as close to `dtype` as possible."""
    if isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind in "mM"):
        return pd.Series(pd.NaT, index=range(n), dtype=dtype)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return pd.Series(np.nan, index=range(n), dtype=dtype)
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return pd.Series(pd.NA, index=range(n), dtype="Int64")
    if isinstance(dtype, np.dtype) and dtype.kind == "b":
        return pd.Series(pd.NA, index=range(n), dtype="boolean")
    return pd.Series([None] * n, index=range(n), dtype=object)


def _rejects_as_rows(columns: pd.Index, dtypes: pd.Series, rejects: pd.DataFrame) -> pd.DataFrame:
    n = len(rejects)
    data: dict[str, pd.Series] = {}
    for col in columns:
        if col == SOURCE_ROW:
            data[col] = rejects[SOURCE_ROW].astype("int64").reset_index(drop=True)
        elif col in RECOVERED_IDS and col in rejects.columns:
            # The id ingest recovered from the bad line (None where the line did not allow it).
            ids = rejects[col].astype(object).reset_index(drop=True)
            data[col] = ids.where(ids.notna(), None).astype(object)
        else:
            data[col] = _nulls_like(dtypes[col], n)
    out = pd.DataFrame(data, index=range(n))
    out[RAW] = rejects[RAW].astype(object).where(rejects[RAW].notna(), None).reset_index(drop=True)
    out[REASON] = rejects[REASON].astype(str).reset_index(drop=True)
    out[CHECK] = INGEST_CHECK
    return out


def quarantine_frame(frame: pd.DataFrame, failures: RowFailures, rejects: pd.DataFrame | None = None) -> pd.DataFrame:
    """The quarantine table for one warehouse table (empty, with the schema, when nothing failed).

    Args:
        frame: the warehouse table.
        failures: which rows failed which checks (positions into `frame`).
        rejects: ingest rejects to fold in (may be None).
    """
    positions = sorted(failures)
    out = frame.iloc[positions].reset_index(drop=True)
    out[RAW] = pd.Series([None] * len(out), dtype=object)
    out[REASON] = pd.Series(["; ".join(r for _, r in failures[p]) for p in positions], dtype=object)
    out[CHECK] = pd.Series([", ".join(dict.fromkeys(c for c, _ in failures[p])) for p in positions], dtype=object)
    if rejects is not None and len(rejects):
        rej = _rejects_as_rows(frame.columns, frame.dtypes, rejects)
        out = pd.concat([out, rej], ignore_index=True) if len(out) else rej
    if SOURCE_ROW in out.columns and len(out):
        out = out.sort_values(SOURCE_ROW, kind="stable").reset_index(drop=True)
    return out
