"""The batched extraction loop: worker threads decode, the main thread runs the model, the cache persists.

Per item: missing (no value) -> counted, no work; otherwise a worker thread reads it and hashes
its content; a hash already in the cache costs nothing more; a new one is decoded and
preprocessed in the thread while the main thread runs the model on the previous batch (torch and
the decoders release the GIL). A bad item raises ItemFailure in its thread and becomes a
recorded failure; the batch and the run go on. Vectors are flushed to the cache every
`checkpoint_items` and on any exit, so a crash resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmrec.encoders.base import Encoder, ItemFailure
from mmrec.encoders.store import FeatureCache
from mmrec.errors import ModelError
from mmrec.progress import Rate
from mmrec.progress import report as report_progress

log = logging.getLogger(__name__)

LOG_EVERY_S = 15.0


@dataclass
class ExtractionResult:
    """What one encoder did over one list of items.

    Attributes:
        item_ids: items that have a vector, in input order; `vectors` rows align with them.
        content_hashes: the content hash of each of `item_ids` (items with the same content
            share one vector; a sharded run uses them to keep it that way across shards).
        failures: one dict per failed item: item_id, source, reason, cached (True when the
            failure was remembered from an earlier run rather than found now).
        seconds: wall time of the whole run (hashing, cache look-ups, decoding, model).
        model_seconds: time spent in the model's forward passes.
    """

    encoder: str
    modality: str
    item_ids: list[str] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    content_hashes: list[str] = field(default_factory=list)
    encoded: int = 0
    cached: int = 0
    missing: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def items_per_second(self) -> float:
        """Encoded items per second of wall time (0 when nothing needed encoding)."""
        return self.encoded / self.seconds if self.seconds > 0 and self.encoded else 0.0


def is_missing(value: Any) -> bool:
    """None, NaN, or an empty/blank media path."""
    if value is None:
        return True
    return isinstance(value, float) and math.isnan(value)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with transformers
        return None
    return tqdm(total=total, desc=desc, unit="item", disable=None if enabled else True, leave=False)


def run_extraction(
    encoder: Encoder,
    items: Sequence[tuple[str, Any]],
    cache: FeatureCache,
    *,
    batch_size: int = 32,
    workers: int = 4,
    checkpoint_items: int = 512,
    retry_failed: bool = False,
    progress: bool = True,
    sort_by_length: bool = False,
) -> ExtractionResult:
    """Encode every item not already in `cache`; return vectors for all items that have one.

    Args:
        encoder: any registered encoder.
        items: (item_id, value) pairs; value is the text, or the media file's absolute path,
            or None when the item lacks this modality.
        cache: the cache for `encoder.cache_key()`.
        batch_size: items per forward pass.
        workers: decoding threads.
        checkpoint_items: flush the cache after this many new vectors.
        retry_failed: re-decode items whose content failed in an earlier run.
        progress: progress bar on a terminal.
        sort_by_length: process values in length order (text: less padding per batch).

    Raises:
        ModelError: the model fails on every item of the first batch (a systematic problem,
            e.g. wrong weights), rather than recording the whole catalogue as failed.
    """
    start = time.perf_counter()
    result = ExtractionResult(encoder=encoder.id, modality=encoder.modality)
    content: dict[str, str] = {}  # item_id -> content hash, for items that will have a vector
    sources: dict[str, Any] = {}
    todo: list[tuple[str, Any]] = []
    for item_id, value in items:
        if is_missing(value) or (encoder.modality != "text" and isinstance(value, str) and not value.strip()):
            result.missing += 1
        else:
            todo.append((str(item_id), value))
            sources[str(item_id)] = value
    if sort_by_length:
        todo.sort(key=lambda kv: len(kv[1]) if isinstance(kv[1], (str, bytes)) else 0)

    def work(value: Any) -> tuple[str, str | None, Any]:
        try:
            raw, digest = encoder.read(value)
        except ItemFailure as exc:
            return "failed", None, str(exc)
        except Exception as exc:  # noqa: BLE001 - one unreadable item must not end the run
            return "error", None, f"unexpected {type(exc).__name__} while reading: {exc}"
        if cache.has(digest):
            return "cached", digest, None
        if not retry_failed and digest in cache.failures:
            return "failed_cached", digest, cache.failures[digest]
        try:
            return "ok", digest, encoder.prepare(raw)
        except ItemFailure as exc:
            return "failed", digest, str(exc)
        except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not end the run
            return "error", digest, f"unexpected {type(exc).__name__} while decoding: {exc}"

    batch: list[tuple[str, str, Any]] = []  # (item_id, hash, prepared)
    in_batch: set[str] = set()
    bar = _progress(len(todo), f"{encoder.modality}:{encoder.id}", progress)
    last_log = time.perf_counter()
    rate = Rate(len(todo))
    done = 0
    progress_key = f"extract-{encoder.modality}"
    report_progress(progress_key, 0, len(todo), f"{encoder.id}: starting {len(todo)} items")

    def fail(item_id: str, reason: str, cached: bool = False) -> None:
        src = sources.get(item_id)
        result.failures.append(
            {
                "item_id": item_id,
                "source": str(src)[:200] if encoder.modality != "text" else None,
                "reason": reason,
                "cached": cached,
            }
        )

    def run_batch() -> None:
        nonlocal batch
        if not batch:
            return
        preps = [p for _, _, p in batch]
        t0 = time.perf_counter()
        try:
            vecs: np.ndarray | None = encoder.encode_batch(preps)
        except Exception as exc:  # noqa: BLE001 - isolate the bad item by encoding one at a time
            log.warning("%s: batch of %d failed (%s); retrying item by item", encoder.id, len(batch), exc)
            vecs = None
        rows: list[np.ndarray | None]
        if vecs is not None:
            rows = list(vecs)
        else:
            rows = []
            errors = []
            for p in preps:
                try:
                    rows.append(encoder.encode_batch([p])[0])
                except Exception as exc:  # noqa: BLE001
                    rows.append(None)
                    errors.append(exc)
            if errors and len(errors) == len(preps) and result.encoded == 0:
                raise ModelError(f"{encoder.id}: the model fails on every item: {errors[0]}") from errors[0]
        result.model_seconds += time.perf_counter() - t0
        for (item_id, digest, _), vec in zip(batch, rows, strict=True):
            if vec is None:
                fail(item_id, "the model failed on this item (see the log)")
                content.pop(item_id, None)
            elif not np.isfinite(vec).all():
                fail(item_id, "the model produced NaN/inf for this item")
                content.pop(item_id, None)
            else:
                cache.put(digest, vec)
                result.encoded += 1
        batch = []
        in_batch.clear()
        if cache.pending >= checkpoint_items:
            cache.flush()

    window = max(2 * batch_size, 4 * workers)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"mmrec-{encoder.modality}") as pool:
            queue: deque[tuple[str, Future]] = deque()
            it = iter(todo)
            exhausted = False
            while queue or not exhausted:
                while not exhausted and len(queue) < window:
                    nxt = next(it, None)
                    if nxt is None:
                        exhausted = True
                        break
                    queue.append((nxt[0], pool.submit(work, nxt[1])))
                if not queue:
                    break
                item_id, fut = queue.popleft()
                status, digest, payload = fut.result()
                if status == "ok":
                    assert digest is not None
                    content[item_id] = digest
                    if cache.has(digest) or digest in in_batch:  # same content as an item just seen
                        result.cached += 1
                    else:
                        batch.append((item_id, digest, payload))
                        in_batch.add(digest)
                        if len(batch) >= batch_size:
                            run_batch()
                elif status == "cached":
                    assert digest is not None
                    content[item_id] = digest
                    result.cached += 1
                elif status == "failed_cached":
                    fail(item_id, str(payload), cached=True)
                else:
                    fail(item_id, str(payload))
                    if status == "failed" and digest is not None:
                        cache.put_failure(digest, str(payload))  # decoding is deterministic
                if bar is not None:
                    bar.update(1)
                done += 1
                now = time.perf_counter()
                if now - last_log > LOG_EVERY_S:
                    last_log = now
                    line = rate.line(done)
                    log.info(
                        "%s: %s; %d encoded, %d cached, %d failed",
                        encoder.id,
                        line,
                        result.encoded,
                        result.cached,
                        result.failed,
                    )
                    report_progress(progress_key, done, len(todo), f"{encoder.id}: {line}")
            run_batch()
    finally:
        cache.flush()  # whatever happened, keep what was encoded
        if bar is not None:
            bar.close()
    cache.compact()
    report_progress(progress_key, len(todo), len(todo), f"{encoder.id}: {rate.line(done)}")

    failed_ids = {f["item_id"] for f in result.failures}
    for iid, digest in content.items():  # a duplicate of content the model then failed on
        if not cache.has(digest) and iid not in failed_ids:
            result.cached -= 1
            fail(iid, "same content as another item the model failed on")
    ids = [iid for iid, _ in todo if iid in content and cache.has(content[iid])]
    order = {str(iid): i for i, (iid, _) in enumerate(items)}
    ids.sort(key=lambda iid: order.get(iid, 0))
    result.item_ids = ids
    result.content_hashes = [content[i] for i in ids]
    result.vectors = (
        np.stack([cache.vectors[content[i]] for i in ids]).astype(np.float32)
        if ids
        else np.zeros((0, encoder.dim), np.float32)
    )
    result.failures.sort(key=lambda f: order.get(f["item_id"], 0))
    result.seconds = time.perf_counter() - start
    return result
