"""The nightly top-K partitioned by user blocks over Dask workers; same file as the single process.

Each block is a contiguous range of user rows whose start is a multiple of the chunk size, so a
worker scores exactly the chunks `mmrec.recommend.topk.iter_topk` would (same matrix products, same
masking, same tie order) and returns only their top-K indices and scores (B x k, not B x n_items).
The model is scattered once to every worker (held in worker memory, not re-sent per task); each
task gets only its block's rows of the history matrix.

The driver writes the parquet file chunk by chunk in user order through the same writer and
summary code as `write_recommendations`, so the output, row groups and summary match the
single-process run (only `seconds` differs). Memory stays bounded on every side: a worker holds
one chunk's scores (`RecommendParams.chunk_users` x n_items) at a time, the driver at most
`max_in_flight` blocks of top-K results.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from mmrec.constants import DEFAULT_K
from mmrec.errors import ConfigError, ModelError
from mmrec.ranking import iter_topk
from mmrec.recommend.writer import RecommendationWriter

log = logging.getLogger(__name__)

DEFAULT_BLOCK_USERS = 16_384


def block_bounds(n_users: int, block_users: int, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) user ranges: `block_users` rounded up to a multiple of `chunk` (chunks stay aligned)."""
    if block_users < 1 or chunk < 1:
        raise ConfigError(f"block size and chunk size must be >= 1, got {block_users} and {chunk}")
    size = -(-block_users // chunk) * chunk
    return [(s, min(s + size, n_users)) for s in range(0, n_users, size)]


def score_block(
    model: Any, lo: int, hi: int, k: int, chunk: int, exclude: sp.csr_matrix | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K of users lo..hi-1, chunk by chunk (a Dask task).

    Args:
        exclude: the block's rows of the history matrix (row 0 = user `lo`), or None.

    Returns:
        (item indices (hi-lo, k'), scores (hi-lo, k')), k' = min(k, n_items); masked entries -inf.
    """
    idx_parts, val_parts = [], []
    for _, idx, val in iter_topk(
        model.score, np.arange(lo, hi, dtype=np.int64), k, chunk, seen=exclude, seen_offset=lo
    ):
        idx_parts.append(idx)
        val_parts.append(val)
    return np.concatenate(idx_parts), np.concatenate(val_parts)


def write_recommendations_dask(
    model: Any,
    path: str | Path,
    client: Any,
    k: int = DEFAULT_K,
    batch_size: int = 1024,
    exclude: sp.csr_matrix | None = None,
    block_users: int = DEFAULT_BLOCK_USERS,
    max_in_flight: int | None = None,
) -> dict[str, Any]:
    """`mmrec.recommend.writer.write_recommendations` for every user, with the scoring on Dask workers.

    Args:
        client: a `distributed.Client`.
        batch_size: users per chunk (`RecommendParams.chunk_users`): a worker's peak memory is
            about batch_size x n_items x 4 bytes.
        block_users: users per task (rounded up to a multiple of `batch_size`).
        max_in_flight: blocks submitted ahead of the one being written (default: 2 per worker
            + 1), which bounds the top-K results waiting in worker and driver memory.

    Returns:
        The summary of `write_recommendations`, plus `blocks` and `workers`.
    """
    if model.item_ids is None or model.user_ids is None:
        raise ModelError(f"model {model.name!r} is not fitted; nothing to recommend from")
    n_users = len(model.user_ids)
    if exclude is not None:
        exclude = sp.csr_matrix(exclude)
        if exclude.shape != (n_users, len(model.item_ids)):
            raise ModelError(f"exclude matrix shape {exclude.shape} does not match the model's index")
    start = time.perf_counter()
    blocks = block_bounds(n_users, block_users, batch_size)
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    window = max_in_flight or 2 * n_workers + 1
    [remote_model] = client.scatter([model], broadcast=True, hash=False)

    def submit(i: int) -> Any:
        lo, hi = blocks[i]
        rows = exclude[lo:hi] if exclude is not None else None
        return client.submit(
            score_block,
            remote_model,
            lo,
            hi,
            k,
            batch_size,
            rows,
            key=f"mmrec-score-block-{i:06d}-{time.time_ns()}",
            pure=False,
        )

    pending: dict[int, Any] = {}
    nxt = 0
    workers: set[str] = set()
    try:
        with RecommendationWriter(model, path, k) as out:
            for i, (lo, hi) in enumerate(blocks):
                while nxt < len(blocks) and nxt < i + window:
                    pending[nxt] = submit(nxt)
                    nxt += 1
                fut = pending.pop(i)
                idx_all, val_all = fut.result()
                for who in client.who_has([fut]).get(fut.key, ()):
                    workers.add(who)
                del fut
                for s in range(0, hi - lo, batch_size):  # the single-process chunks, in order
                    users = np.arange(lo + s, min(lo + s + batch_size, hi), dtype=np.int64)
                    out.write(users, idx_all[s : s + batch_size], val_all[s : s + batch_size])
    finally:
        client.cancel(list(pending.values()))
        client.cancel([remote_model])
    return out.summary(time.perf_counter() - start, blocks=len(blocks), workers=sorted(workers))
