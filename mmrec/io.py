"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every artifact is written to a temporary sibling and renamed into place (rename is atomic on
POSIX within a filesystem), so an interrupted stage leaves what was there before.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    old = os.umask(0o022)
    os.umask(old)
    return old


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; use what open() would
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path` whole (old content removed)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_parquet(path: str | os.PathLike[str], df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_tsv(path: str | os.PathLike[str], df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, lineterminator="\n")


def clean_interrupted(path: str | os.PathLike[str]) -> list[Path]:
    """Remove what a killed `atomic_dir`/`atomic_path` write left around `path`; returns what went.

    A kill leaves `.<name>.*.tmp` beside the target (and, inside a folder that was being filled,
    `.<entry>.*.tmp` / `.<entry>.old`). A kill between `atomic_dir`'s two renames leaves the
    previous content as `.<name>.old` with no `<name>`: that is put back first, so the last
    complete output survives. Call it before writing `path` again (one writer at a time).
    """
    target = Path(path)
    parent = target.parent
    if not parent.is_dir():
        return []
    old = parent / f".{target.name}.old"
    if old.exists() and not target.exists():
        os.replace(old, target)
    leftovers = [*parent.glob(f".{target.name}.*.tmp"), *([old] if old.exists() else [])]
    if target.is_dir():
        leftovers += [*target.glob(".*.tmp"), *target.glob(".*.old")]
    for p in leftovers:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return leftovers
