"""The forget audit log: one JSON line per forget, append-only, each append atomic.

A record holds the user's pseudonym (never the raw id), the UTC time, per store what was removed
(counts), the stores that failed and the files still holding the id. An append rewrites the log
through a temporary file and `os.replace`, so a crash leaves the old log or the new one whole;
earlier lines are copied byte for byte, never edited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmrec.io import atomic_path
from mmrec.paths import DatasetPaths
from mmrec.privacy.forget_list import privacy_dir


def audit_path(paths: DatasetPaths) -> Path:
    return privacy_dir(paths) / "audit.jsonl"


def append_audit(paths: DatasetPaths, record: dict[str, Any]) -> Path:
    f = audit_path(paths)
    old = f.read_bytes() if f.is_file() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
    with atomic_path(f) as tmp:
        tmp.write_bytes(old + line)
    return f


def read_audit(paths: DatasetPaths) -> list[dict[str, Any]]:
    f = audit_path(paths)
    if not f.is_file():
        return []
    return [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
