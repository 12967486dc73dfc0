"""One modality's feature extraction sharded over Dask workers, merged into the usual feature file.

The driver resolves the items, encoder and cache exactly as `mmrec.extract.extract_modality` does
(`plan_extraction`), cuts the items into shards (`shard_plan`: contiguous runs of the table;
texts in the single process's length order, whole batches per shard) and submits one task per
shard. A shard task runs the ordinary extraction loop (`run_extraction`) on its items with:
- the worker's encoder, built once per worker (`workers.worker_state`), and checked to have the
  driver's cache key (a worker with other weights installed fails loudly instead of mixing
  vectors);
- the worker's view of the shared content-hash cache (`SharedCache`): it reads the shard files
  other workers wrote since it last looked and writes its own as it goes, so a shard that is
  re-run (worker killed, driver restarted) encodes only what was not committed yet. Shards are
  therefore idempotent (same inputs, same output, no duplicated work) and a run is resumable.
The driver merges the shard results back into the items table's order and writes the feature
file, sidecar and report entry through `finish_extraction` (atomic writes): the same bytes as
the single-process path.

Every worker must see the same filesystem paths as the driver (the dataset's media and the
workspace): tasks exchange artifacts through files, never through Dask.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.data.contract import DatasetSpec
from mmrec.encoders.config import ExtractParams
from mmrec.encoders.store import MAX_SHARDS, FeatureCache
from mmrec.errors import ConfigError, ModelError
from mmrec.paths import DatasetPaths

log = logging.getLogger(__name__)

DEFAULT_SHARD_ITEMS = 2048


class SharedCache(FeatureCache):
    """A `FeatureCache` whose folder other processes write into at the same time.

    `load` reads only the shard files it has not read yet (so refreshing before each task is
    cheap), its own flushes are remembered as read, and it never compacts: compaction deletes
    shard files, which is only safe when no other writer is running (the driver compacts once all
    shards are done).
    """

    def __init__(self, folder: str | Path, info: dict[str, Any] | None = None) -> None:
        self._read: set[str] = set()
        super().__init__(folder, info)

    def _shards(self, kind: str) -> list[Path]:
        return [s for s in super()._shards(kind) if s.name not in self._read]

    def load(self) -> None:
        new = {s.name for kind in ("vectors", "failures") for s in self._shards(kind)}
        super().load()
        self._read |= new

    def _shard_name(self, kind: str) -> Path:
        path = super()._shard_name(kind)
        self._read.add(path.name)
        return path

    def compact(self, max_shards: int = 0) -> None:
        self.flush()


@dataclass
class ShardResult:
    """What one shard task returns to the driver (an `ExtractionResult` plus where it ran)."""

    index: int
    result: Any  # mmrec.encoders.runner.ExtractionResult
    runtime: dict[str, Any]
    worker: str
    pid: int
    encoder_builds: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _encoder_key(modality: str, params: ExtractParams) -> tuple[str, str, str, str]:
    return ("encoder", modality, params.modality(modality).model_dump_json(), f"{params.device}/{params.precision}")


def encode_shard(
    index: int,
    modality: str,
    params: ExtractParams,
    cache_key: str,
    cache_folder: str,
    info: dict[str, Any],
    values: list[tuple[str, Any]],
) -> ShardResult:
    """Encode one shard's items through the worker's encoder and the shared cache (a Dask task).

    Raises:
        ModelError: the worker's encoder has another cache key than the driver's (different
            weights or code on that worker), or the model fails on every item.
    """
    from mmrec.distributed.workers import worker_state
    from mmrec.encoders.runner import run_extraction
    from mmrec.extract import build_encoder

    state = worker_state()
    ekey = _encoder_key(modality, params)
    encoder = state.get(ekey, lambda: build_encoder(modality, params))
    if encoder.cache_key() != cache_key:
        raise ModelError(
            f"worker pid {os.getpid()}: encoder {encoder.id!r} has cache key {encoder.cache_key()[:16]} but the driver "
            f"planned {cache_key[:16]}; install the same weights and mmrec version on every worker"
        )
    ckey = ("cache", cache_folder)
    with state.lock(ckey):  # one shard at a time writes through this worker's cache object
        cache = state.get(ckey, lambda: SharedCache(cache_folder, info))
        cache.load()  # shard files other workers committed since this worker last looked
        section = params.modality(modality)
        result = run_extraction(
            encoder,
            values,
            cache,
            batch_size=section.batch_size,
            workers=params.workers,
            checkpoint_items=params.checkpoint_items,
            retry_failed=params.retry_failed,
            progress=False,
            sort_by_length=modality == "text",
        )
    try:
        from distributed import get_worker

        where = get_worker().address
    except (ImportError, ValueError):
        where = "local"
    return ShardResult(
        index=index,
        result=result,
        runtime=encoder.runtime(),
        worker=where,
        pid=os.getpid(),
        encoder_builds=state.builds.get(ekey, 0),
    )


def merge_results(
    parts: list[Any], encoder: str, modality: str, dim: int, seconds: float, position: dict[str, int] | None = None
) -> Any:
    """Shard results -> one `ExtractionResult` over all items, in items-table order.

    Args:
        position: item id -> row in the items table (None: the shards are already in that order).
    """
    from mmrec.encoders.runner import ExtractionResult

    out = ExtractionResult(encoder=encoder, modality=modality)
    ids: list[str] = []
    hashes: list[str] = []
    mats = []
    for r in parts:
        ids.extend(r.item_ids)
        hashes.extend(r.content_hashes)
        if len(r.item_ids):
            mats.append(r.vectors)
        out.encoded += r.encoded
        out.cached += r.cached
        out.missing += r.missing
        out.failures.extend(r.failures)
        out.model_seconds += r.model_seconds
    vectors = np.concatenate(mats).astype(np.float32, copy=False) if mats else np.zeros((0, dim), np.float32)
    if position is not None:
        perm = sorted(range(len(ids)), key=lambda j: position[ids[j]])
        ids, hashes, vectors = [ids[j] for j in perm], [hashes[j] for j in perm], vectors[perm]
        out.failures.sort(key=lambda f: position.get(f["item_id"], 0))
    # Same content in two shards that ran at the same time may have been encoded by both, in
    # different batches (last-bit differences): every item gets the vector of the content's first
    # item in table order, as in the single process, whichever shard committed first.
    first: dict[str, int] = {}
    for row, h in enumerate(hashes):
        src = first.setdefault(h, row)
        if src != row:
            vectors[row] = vectors[src]
    out.item_ids, out.content_hashes, out.vectors = ids, hashes, vectors
    out.seconds = seconds
    return out


def shard_plan(
    values: list[tuple[str, Any]], modality: str, shard_items: int, batch_size: int
) -> list[list[tuple[str, Any]]]:
    """The shards' (item_id, value) lists.

    Media: contiguous runs of the items table. Text: the single process encodes texts in length
    order (less padding per batch), and a transformer's output depends (in the last float bits)
    on the padded length of its batch; so texts are cut from that same global length order into
    shards of whole batches, and each shard's batches are the single-process ones: identical
    vectors, not merely close ones. (Exactly the same batches when every text is new; cached or
    failing items shift batch boundaries in both paths differently.)
    """
    order = list(range(len(values)))
    size = shard_items
    if modality == "text":
        present = [i for i, (_, v) in enumerate(values) if isinstance(v, (str, bytes))]
        absent = [i for i, (_, v) in enumerate(values) if not isinstance(v, (str, bytes))]
        present.sort(key=lambda i: len(values[i][1]))  # stable, as run_extraction(sort_by_length=True)
        order = present + absent
        size = -(-shard_items // batch_size) * batch_size
    return [[values[i] for i in order[lo:hi]] for lo, hi in shard_bounds(len(order), size)]


def shard_bounds(n: int, shard_items: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges of at most `shard_items` covering range(n)."""
    if shard_items < 1:
        raise ConfigError(f"shard size must be >= 1 item, got {shard_items}")
    return [(s, min(s + shard_items, n)) for s in range(0, n, shard_items)]


def extract_modality_dask(
    spec: DatasetSpec,
    paths: DatasetPaths,
    modality: str,
    params: Any,
    client: Any,
    shard_items: int = DEFAULT_SHARD_ITEMS,
) -> dict[str, Any]:
    """`mmrec.extract.extract_modality`, with the encoding spread over `client`'s Dask workers.

    Args:
        client: a `distributed.Client` whose workers see the same paths as this process.
        shard_items: items per task; small enough to balance the workers, large enough that the
            per-task overhead (a few ms) stays negligible against encoding.

    Returns:
        The report entry, as `extract_modality` returns it, plus `shards` and `workers`.

    Raises:
        StageError / ConfigError: as `extract_modality`; ModelError from a shard.
    """
    from dask.base import tokenize

    from mmrec.distributed.workers import ensure_plugin
    from mmrec.extract import extract_modality, finish_extraction, plan_extraction

    start = time.perf_counter()
    if modality not in spec.modalities:  # nothing to encode: the single-process path says so
        return extract_modality(spec, paths, modality, params)
    job = plan_extraction(spec, paths, modality, params)
    ensure_plugin(client)
    cache_key = job.info["cache_key"]
    futures = []
    shards = shard_plan(job.values, modality, shard_items, job.params.modality(modality).batch_size)
    # Shards are dealt round-robin over the workers present now (a loose restriction: a worker that
    # leaves, or one that is idle while another is busy, can still take them), so a cluster whose
    # second worker is still starting does not run every shard on the first.
    addresses = sorted(client.scheduler_info().get("workers", {}))
    for i, values in enumerate(shards):
        # the key is the shard's content: a restarted driver re-attaches to a shard still running
        key = f"mmrec-extract-{modality}-{i:05d}-{tokenize(cache_key, values, job.params.model_dump_json())}"
        where = {"workers": [addresses[i % len(addresses)]], "allow_other_workers": True} if addresses else {}
        futures.append(
            client.submit(
                encode_shard,
                i,
                modality,
                job.params,
                cache_key,
                str(job.cache_folder.resolve()),
                job.info,
                values,
                key=key,
                pure=False,
                **where,
            )
        )
    log.info(
        "extract %s/%s: %d items in %d shards on %d workers",
        modality,
        job.info["encoder"],
        len(job.values),
        len(futures),
        len(client.scheduler_info().get("workers", {})),
    )
    try:
        shard_results: list[ShardResult] = client.gather(futures)
    except BaseException:
        client.cancel(futures)
        raise
    job.cache_folder.mkdir(parents=True, exist_ok=True)
    position = {iid: i for i, (iid, _) in enumerate(job.values)}
    merged = merge_results(
        [s.result for s in shard_results],
        job.info["encoder"],
        modality,
        int(job.info["dim"]),
        time.perf_counter() - start,
        position,
    )
    # every writer is done: safe to merge shard files. A content two shards encoded differently is
    # rewritten with the vector this run returns, in one shard replacing all (so a re-run, which
    # reads only the cache, returns the same bytes; no shard file name can win over it)
    cache = FeatureCache(job.cache_folder, job.info)
    fixed = 0
    for h, v in zip(merged.content_hashes, merged.vectors, strict=True):
        if h not in cache.vectors or not np.array_equal(cache.vectors[h], v):
            cache.put(h, v)
            fixed += 1
    cache.compact(max_shards=0 if fixed else MAX_SHARDS)
    runtime = shard_results[0].runtime if shard_results else job.encoder.runtime()
    entry = finish_extraction(job, merged, runtime)
    loads: dict[str, int] = {}
    for s in shard_results:  # encoders built per worker (1 each: loaded once, reused by its shards)
        loads[s.worker] = max(loads.get(s.worker, 0), s.encoder_builds)
    return {**entry, "shards": len(shard_results), "workers": sorted(loads), "encoder_loads": loads}
