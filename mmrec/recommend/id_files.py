"""Id lists from files (`--users`, `recommend.exclude_items_file`, `recommend.candidates_file`).

One id per line, or a CSV/TSV/parquet with the id column; a bad line fails loudly, naming it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmrec.constants import USER_ID
from mmrec.data.reader import Reject, read_delimited_records
from mmrec.errors import DataError


def read_user_ids(path: str | Path) -> list[str]:
    """User ids from a file: one per line, or a CSV/TSV/parquet with a `user_id` column."""
    return read_ids(path, USER_ID, what="users")


def read_ids(path: str | Path, column: str, what: str = "ids") -> list[str]:
    """Ids from a file: one per line, or a CSV/TSV/parquet with a `column` column."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: {what} file not found (one id per line, or a table with a {column!r} column)")
    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
    else:
        first = p.read_text(encoding="utf-8").splitlines()[:1]
        sep = "\t" if first and "\t" in first[0] else ","
        if first and column in [c.strip() for c in first[0].split(sep)]:
            return _ids_from_table(p, sep, column)
        else:
            return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if column not in df.columns:
        raise DataError(f"{p}: no {column!r} column; columns are {list(df.columns)}")
    return df[column].astype(str).tolist()


def _ids_from_table(p: Path, sep: str, column: str) -> list[str]:
    """The `column` of a delimited file, read line by line: a bad line fails loudly, naming it.

    pandas' reader would let one stray quote swallow the following lines (those users would
    silently get no recommendations); the line-accounting reader stops at nothing and reports.
    """
    header, records, _ = read_delimited_records(p, "utf-8", sep)
    pos = header.index(column)
    ids: list[str] = []
    bad: list[Reject] = []
    for _, _, fields in records:
        if isinstance(fields, Reject):
            bad.append(fields)
        else:
            ids.append(fields[pos].strip())
    if bad:
        raise DataError(
            f"{p}: {len(bad)} unreadable line(s), e.g. line {bad[0].line}: {bad[0].reason}; fix them and run again"
        )
    return [i for i in ids if i]
