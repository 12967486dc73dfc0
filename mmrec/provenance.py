"""What a trained model was made from (split, data, features), and the check that it still matches.

`stage train` records, in each model's `model.json` under `provenance`, the split's kind and hash
(sha256 of the exported split files), the sha256 of the validated tables and of each feature file
the model was given. `stage evaluate` and the API refuse a model whose split hash differs from the
split they would use it with: metrics computed on a split the model was not trained on are wrong
(test interactions may have been training data), and the API's seen-item masking would be too.
Set MMREC_ALLOW_SPLIT_MISMATCH=1 to go on anyway (it is logged).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mmrec.data.warehouse import file_sha256
from mmrec.errors import ModelError

log = logging.getLogger(__name__)

ALLOW_SPLIT_MISMATCH_ENV = "MMREC_ALLOW_SPLIT_MISMATCH"


def _sha256(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def training_provenance(
    paths: Any, split_kind: str, split_hash: str, feature_files: dict[str, Path] | None = None
) -> dict[str, Any]:
    """The provenance block written into each model.json by `stage train`."""
    return {
        "split": {"kind": split_kind, "hash": split_hash},
        "data": {t: _sha256(paths.validated_table(t)) for t in ("interactions", "items")},
        "features": {m: {"path": str(f), "sha256": _sha256(f)} for m, f in sorted((feature_files or {}).items())},
    }


def current_split_hash(paths: Any, kind: str) -> str | None:
    """The hash of the split on disk (None when there is none)."""
    f = paths.splits(kind) / "split.json"
    if not f.is_file():
        return None
    try:
        return str(json.loads(f.read_text())["hash"])
    except (ValueError, KeyError, TypeError):
        return None


def check_split(model: Any, split_hash: str | None, where: str, fix: str) -> None:
    """Raise ModelError when `model` was trained on another split than `split_hash`.

    Args:
        model: a loaded Recommender (its `provenance` comes from model.json).
        split_hash: the split it is about to be used with (None: unknown, nothing to compare).
        where: the model's folder or registry name, for the message.
        fix: what to run to get a matching model.
    """
    trained = (getattr(model, "provenance", None) or {}).get("split", {}).get("hash")
    if trained is None or split_hash is None:
        if trained is None:
            log.warning("%s has no split hash in its model.json (trained before provenance was recorded)", where)
        return
    if trained == split_hash:
        return
    msg = (
        f"{where} was trained on split {trained[:12]} but the current split is {split_hash[:12]}; "
        f"its results would be wrong (test rows may have been its training data). Fix: {fix}"
    )
    if os.environ.get(ALLOW_SPLIT_MISMATCH_ENV) == "1":
        log.warning("%s (going on: %s=1)", msg, ALLOW_SPLIT_MISMATCH_ENV)
        return
    raise ModelError(f"{msg}; or set {ALLOW_SPLIT_MISMATCH_ENV}=1 to use it anyway")
