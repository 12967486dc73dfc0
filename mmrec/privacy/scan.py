"""Does a file hold a user id? A byte search that also looks inside the formats the platform writes.

A plain byte search misses what compression hides: numpy's `.npz` (zip members), parquet pages
(snappy/zstd), gzip. `file_mentions` decodes those before searching, and reads sqlite databases
through SQLite itself *and* as bytes (deleted rows linger in free pages until VACUUM). It is what
`forget` uses to find stale DVC cache objects and to report what is left, and what the test uses
to prove nothing is left.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

_ID_CHARS = rb"A-Za-z0-9_.\-@:"


def id_pattern(user_id: str) -> re.Pattern[bytes]:
    """The id as a whole token: `u1` does not match inside `u10` (UTF-8 and UTF-32-LE forms are separate patterns)."""
    raw = re.escape(user_id.encode("utf-8"))
    return re.compile(rb"(?<![" + _ID_CHARS + rb"])" + raw + rb"(?![" + _ID_CHARS + rb"])")


def bytes_mention(data: bytes, user_id: str, whole: bool = True) -> bool:
    """`whole`: only as a whole token (`u1` not inside `u10`); False: any substring (a proof of
    absence must use this: binary keys glue the id to other bytes, e.g. Feast's Redis keys)."""
    if not whole:
        return user_id.encode("utf-8") in data
    return id_pattern(user_id).search(data) is not None


def _npy_mentions(data: bytes, user_id: str, whole: bool) -> bool:
    """A .npy array of strings (numpy writes them fixed-width UTF-32, so no byte boundary exists
    between elements): decoded and compared element by element."""
    import numpy as np

    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError:  # an object array: pickled, searched as bytes only
        return False
    if arr.dtype.kind not in "US":
        return False
    return any(
        bytes_mention(str(v).encode("utf-8") if arr.dtype.kind == "U" else bytes(v), user_id, whole)
        for v in arr.ravel()
    )


def _parquet_mentions(data: bytes, user_id: str, whole: bool) -> bool:
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    for col in table.columns:
        t = col.type
        if str(t) in ("string", "large_string", "binary", "large_binary") or "string" in str(t) or "list" in str(t):
            for v in col.to_pylist():
                if v is not None and bytes_mention(str(v).encode("utf-8"), user_id, whole):
                    return True
    return bytes_mention(str(table.schema.metadata or {}).encode("utf-8"), user_id, whole)


def _sqlite_mentions(path: Path, user_id: str, whole: bool) -> bool:
    import sqlite3

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return any(bytes_mention(line.encode("utf-8"), user_id, whole) for line in con.iterdump())
    finally:
        con.close()


def data_mentions(data: bytes, user_id: str, depth: int = 0, whole: bool = True) -> bool:
    """Raw bytes, then whatever container they are (zip/npz, gzip, parquet) decoded, recursively."""
    if bytes_mention(data, user_id, whole):
        return True
    if depth > 3:
        return False
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                return any(
                    data_mentions(z.read(n), user_id, depth + 1, whole) or bytes_mention(n.encode(), user_id, whole)
                    for n in z.namelist()
                )
        except zipfile.BadZipFile:
            return False
    if data[:6] == b"\x93NUMPY":
        return _npy_mentions(data, user_id, whole)
    if data[:2] == b"\x1f\x8b":
        try:
            return data_mentions(gzip.decompress(data), user_id, depth + 1, whole)
        except (OSError, EOFError):
            return False
    if data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        try:
            return _parquet_mentions(data, user_id, whole)
        except Exception:  # noqa: BLE001 - a corrupt parquet file is searched as bytes only
            return False
    return False


def file_mentions(path: Path, user_id: str, whole: bool = True) -> bool:
    """Does the file at `path` hold `user_id` (as bytes, or inside a format it is written in)?"""
    data = path.read_bytes()
    if data_mentions(data, user_id, whole=whole):
        return True
    if data[:16] == b"SQLite format 3\x00":
        return _sqlite_mentions(path, user_id, whole)
    return False


def walk_files(roots: Iterable[Path], skip: Iterable[Path] = ()) -> Iterator[Path]:
    """Every regular file under `roots` (not following links), except under `skip`."""
    skipped = [s.resolve() for s in skip]
    for root in roots:
        if root.is_file():
            yield root
            continue
        if not root.is_dir():
            continue
        for f in sorted(root.rglob("*")):
            if f.is_symlink() or not f.is_file():
                continue
            r = f.resolve()
            if any(r == s or s in r.parents for s in skipped):
                continue
            yield f


def files_mentioning(roots: Iterable[Path], user_id: str, skip: Iterable[Path] = (), whole: bool = True) -> list[Path]:
    return [f for f in walk_files(roots, skip) if file_mentions(f, user_id, whole)]
