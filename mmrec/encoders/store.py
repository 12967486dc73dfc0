"""Feature files and the content-hash cache behind them.

Feature file (ARCHITECTURE.md §11): `data/<name>/features/<modality>/<encoder>.parquet` with
`item_id` (string) and `vector` (list<float32>), one row per item that has a vector, in the items
table's order. Its parquet metadata (`mmrec.features`) carries the encoder id, weights hash,
preprocessing and cache key; a sidecar `<encoder>.json` repeats them with the run's counts and
every failure.

Cache: one folder per cache key (encoder id + weights hash + preprocessing), holding append-only
parquet shards of (content_hash, vector) and (content_hash, reason) for deterministic failures.
Shards are written atomically as encoding goes, so a crash loses at most one checkpoint of work,
and a re-run (or an added item) encodes only content hashes the cache has not seen.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.constants import ITEM_ID
from mmrec.errors import DataError
from mmrec.io import atomic_path

log = logging.getLogger(__name__)

VECTOR = "vector"
CONTENT_HASH = "content_hash"
META_KEY = b"mmrec.features"
MAX_SHARDS = 16  # more shards than this are merged into one at the end of a run


def vectors_to_arrow(matrix: np.ndarray) -> Any:  # -> pa.ListArray
    """(n, d) float32 -> list<float32> arrow array without a Python loop."""
    import pyarrow as pa

    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = matrix.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * d)
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type=pa.float32()))


def arrow_to_vectors(column: Any, path: Path | str = "") -> np.ndarray:
    """A list<float32> (or fixed-size list) arrow column -> (n, d) float32."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if values.size % n:
        raise DataError(f"{path}: vectors have different lengths; the feature file is corrupt, delete it and re-run")
    return values.reshape(n, values.size // n)


class FeatureCache:
    """content hash -> vector (and -> failure reason) for one cache key, persisted as shards.

    Not thread-safe for writers: the runner's main thread is the only one that adds; worker
    threads only read (`has`), which is safe for a dict under the GIL.
    """

    def __init__(self, folder: str | Path, info: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.info = info or {}
        self.vectors: dict[str, np.ndarray] = {}
        self.failures: dict[str, str] = {}
        self._pending_vectors: list[tuple[str, np.ndarray]] = []
        self._pending_failures: list[tuple[str, str]] = []
        self.load()

    # ---- reading ----------------------------------------------------------------------------
    def _shards(self, kind: str) -> list[Path]:
        return sorted(self.folder.glob(f"{kind}-*.parquet")) if self.folder.is_dir() else []

    def load(self) -> None:
        import pyarrow.parquet as pq

        for shard in self._shards("vectors"):
            try:
                table = pq.read_table(shard)
                mat = arrow_to_vectors(table.column(VECTOR), shard)
            except Exception as exc:  # noqa: BLE001 - a damaged shard costs re-encoding, not the run
                log.warning("%s: unreadable cache shard skipped (%s); its items will be re-encoded", shard, exc)
                continue
            for h, v in zip(table.column(CONTENT_HASH).to_pylist(), mat, strict=True):
                self.vectors[h] = v
        for shard in self._shards("failures"):
            try:
                table = pq.read_table(shard)
            except Exception as exc:  # noqa: BLE001
                log.warning("%s: unreadable cache shard skipped (%s)", shard, exc)
                continue
            for h, reason in zip(
                table.column(CONTENT_HASH).to_pylist(), table.column("reason").to_pylist(), strict=True
            ):
                self.failures[h] = reason
        for h in self.vectors:  # a later success wins over an old failure
            self.failures.pop(h, None)

    def has(self, content_hash: str) -> bool:
        return content_hash in self.vectors

    def __len__(self) -> int:
        return len(self.vectors)

    # ---- writing ----------------------------------------------------------------------------
    def put(self, content_hash: str, vector: np.ndarray) -> None:
        vec = np.asarray(vector, dtype=np.float32)
        self.vectors[content_hash] = vec
        self.failures.pop(content_hash, None)
        self._pending_vectors.append((content_hash, vec))

    def put_failure(self, content_hash: str, reason: str) -> None:
        self.failures[content_hash] = reason
        self._pending_failures.append((content_hash, reason))

    @property
    def pending(self) -> int:
        return len(self._pending_vectors)

    def _shard_name(self, kind: str) -> Path:
        return self.folder / f"{kind}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"

    def flush(self) -> None:
        """Write pending vectors/failures as new shards (atomically); a no-op when nothing is pending."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending_vectors and not self._pending_failures:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "key.json"
        if self.info and not meta.is_file():
            with atomic_path(meta) as tmp:
                tmp.write_text(json.dumps(self.info, indent=2, default=str) + "\n")
        if self._pending_vectors:
            hashes = [h for h, _ in self._pending_vectors]
            mat = np.stack([v for _, v in self._pending_vectors])
            table = pa.table({CONTENT_HASH: pa.array(hashes, pa.string()), VECTOR: vectors_to_arrow(mat)})
            with atomic_path(self._shard_name("vectors")) as tmp:
                pq.write_table(table, tmp)
            self._pending_vectors = []
        if self._pending_failures:
            table = pa.table(
                {
                    CONTENT_HASH: pa.array([h for h, _ in self._pending_failures], pa.string()),
                    "reason": pa.array([r for _, r in self._pending_failures], pa.string()),
                }
            )
            with atomic_path(self._shard_name("failures")) as tmp:
                pq.write_table(table, tmp)
            self._pending_failures = []

    def compact(self, max_shards: int = MAX_SHARDS) -> None:
        """Merge shards into one when there are more than `max_shards` (keeps loading fast).

        The merged shard is written before the old ones are removed, so a crash in between
        leaves duplicates (harmless: same hash, same vector), never a loss.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.flush()
        shards = self._shards("vectors")
        if len(shards) > max_shards and self.vectors:
            hashes = list(self.vectors)
            table = pa.table(
                {
                    CONTENT_HASH: pa.array(hashes, pa.string()),
                    VECTOR: vectors_to_arrow(np.stack([self.vectors[h] for h in hashes])),
                }
            )
            with atomic_path(self._shard_name("vectors")) as tmp:
                pq.write_table(table, tmp)
            for s in shards:
                s.unlink(missing_ok=True)
        fshards = self._shards("failures")
        if len(fshards) > max_shards:
            hashes = list(self.failures)
            table = pa.table(
                {
                    CONTENT_HASH: pa.array(hashes, pa.string()),
                    "reason": pa.array([self.failures[h] for h in hashes], pa.string()),
                }
            )
            with atomic_path(self._shard_name("failures")) as tmp:
                pq.write_table(table, tmp)
            for s in fshards:
                s.unlink(missing_ok=True)


@dataclass(frozen=True)
class Features:
    """A feature file read back: ids, (n, d) float32 matrix aligned with them, and its metadata."""

    item_ids: list[str]
    matrix: np.ndarray
    meta: dict[str, Any]

    def aligned(self, item_ids: list[str] | Any, normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(len(item_ids), d) matrix in the given order (zeros where absent) and its presence mask."""
        index = {iid: i for i, iid in enumerate(self.item_ids)}
        d = self.matrix.shape[1] if self.matrix.size else int(self.meta.get("dim", 0))
        out = np.zeros((len(item_ids), d), np.float32)
        mask = np.zeros(len(item_ids), bool)
        for row, iid in enumerate(item_ids):
            j = index.get(str(iid))
            if j is not None:
                out[row] = self.matrix[j]
                mask[row] = True
        if normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
        return out, mask


def write_features(path: str | Path, item_ids: list[str], matrix: np.ndarray, meta: dict[str, Any]) -> None:
    """Write `item_id` + `vector` (list<float32>) with the encoder metadata, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = int(meta.get("dim") or (matrix.shape[1] if matrix.ndim == 2 else 0))
    if len(item_ids) == 0:
        matrix = np.zeros((0, dim), np.float32)
    table = pa.table({ITEM_ID: pa.array([str(i) for i in item_ids], pa.string()), VECTOR: vectors_to_arrow(matrix)})
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_features(path: str | Path) -> Features:
    """Read a feature file written by `write_features`.

    Raises:
        DataError: missing or not a feature file, naming the stage to run.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: feature file missing; run `mmrec stage extract_<modality>` first")
    table = pq.read_table(path)
    if ITEM_ID not in table.column_names or VECTOR not in table.column_names:
        raise DataError(f"{path}: not a feature file (needs columns {ITEM_ID!r} and {VECTOR!r})")
    raw_meta = (table.schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw_meta) if raw_meta else {}
    matrix = arrow_to_vectors(table.column(VECTOR), path)
    if matrix.size == 0:
        matrix = np.zeros((0, int(meta.get("dim", 0))), np.float32)
    return Features([str(i) for i in table.column(ITEM_ID).to_pylist()], matrix, meta)
