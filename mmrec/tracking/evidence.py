"""What a run and a registered version are tagged with: the code's git commit, the model folder's content hash, the feature files used."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from mmrec.tracking.store import TAG_LIMIT

if TYPE_CHECKING:
    from mmrec.context import StageContext


def git_commit(start: Path | None = None) -> dict[str, str]:
    """The commit of the code that ran (`git_commit`, `git_dirty`); empty outside a git checkout."""
    where = start or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def model_hash(folder: Path) -> str:
    """Content hash of a saved model folder: the same trained model is never registered twice."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def feature_keys(ctx: StageContext) -> dict[str, str]:
    """`features.<modality>` -> encoder files and their content hashes, for the run's tags."""
    root = ctx.paths.data / "features"
    out: dict[str, str] = {}
    if not root.is_dir():
        return out
    for mod_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        keys = []
        for f in sorted(mod_dir.glob("*.parquet")):
            digest = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
            keys.append(f"{f.stem}:{digest}")
        if keys:
            out[f"features.{mod_dir.name}"] = ",".join(keys)[:TAG_LIMIT]
    return out
