"""The one ranking core: top-K selection, seen-item masking and the chunked scoring loop.

Every ranked list the platform produces (evaluation, `Recommender.recommend`, the nightly file,
Dask scoring, exact retrieval, the API, kNN neighbour lists) goes through `topk`, so they all
agree on one rule:

    **higher score first; equal scores: lower item (column) index first.**

The rule holds for every k and every input, including ties that straddle position k (integer
popularity counts tie constantly): the item kept at the cut is the lowest-indexed of the tied
ones, so the nightly file, the evaluation and the API rank the same items the same way.

Input conventions:
- `scores` is 1-D (one row of n items) or 2-D (rows x items); float or integer (bool is read as
  0/1). Results have the same leading shape: 1-D in, 1-D out.
- `-inf` is an ordinary, lowest score (what `mask` writes); callers that must not return masked
  items drop entries whose value is not finite.
- NaN means "no score" (a missing vector): it ranks like `-inf` (last, ties by index) and comes
  back as `-inf`, never as NaN, so `np.isfinite(values)` is the one test for "rankable".

The selection is O(n) per row (argpartition, or `torch.topk` for big float blocks when torch is
already loaded) plus a sort of the k survivors; the tie fix-up at the boundary touches only the
rows where more items tie with the k-th score than the partial selection kept.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

ScoreFn = Callable[[np.ndarray], np.ndarray]  # row indices (B,) -> scores (B, n_items)

# blocks at least this big (elements) use torch.topk when torch is already imported: it is ~10x
# faster than numpy's argpartition on a (1024, 50k) float32 block and gives the same result
# after the tie fix-up below; small blocks (the API's single row) never pay for importing torch
TORCH_MIN_ELEMENTS = 1 << 18
# the tie check compares a block of rows with their k-th score: at most this many booleans at once
FIXUP_ELEMENTS = 1 << 22


def _as_scores(scores: Any) -> np.ndarray:
    """`scores` as a 2-D numeric array; NaN replaced by -inf (a copy only when there is a NaN)."""
    a = np.asarray(scores)
    if a.ndim not in (1, 2):
        raise ValueError(f"scores must be 1-D (items) or 2-D (rows x items), got shape {a.shape}")
    if a.dtype.kind == "b":
        a = a.astype(np.uint8)
    elif a.dtype.kind == "f":
        if a.size and np.isnan(a.min()):  # min propagates NaN: no (B, n) boolean temporary
            a = np.where(np.isnan(a), -np.inf, a).astype(a.dtype, copy=False)
    elif a.dtype.kind not in "iu":
        raise TypeError(f"scores must be float, integer or bool, got dtype {a.dtype}")
    return a if a.ndim == 2 else a[None, :]


def _descending_key(a: np.ndarray) -> np.ndarray:
    """A key whose ascending order is `a`'s descending order, without integer overflow.

    Floats negate; integers take the bitwise complement (-v - 1 for signed, MAX - v for
    unsigned): monotone decreasing over the whole range, so INT_MIN and uint values are safe.
    """
    return -a if a.dtype.kind == "f" else ~a


def _partial(a: np.ndarray, k: int) -> np.ndarray:
    """(B, k) column indices holding a k-largest set of each row, in no particular order.

    Ties with the k-th score are kept arbitrarily here; `topk` repairs them.
    """
    if a.dtype.kind == "f" and a.size >= TORCH_MIN_ELEMENTS and "torch" in sys.modules:
        import torch

        with torch.inference_mode():
            _, idx = torch.topk(torch.from_numpy(np.ascontiguousarray(a)), k, dim=1, largest=True, sorted=False)
        return idx.numpy().astype(np.int64, copy=False)
    return np.argpartition(_descending_key(a), k - 1, axis=1)[:, :k]


def topk(scores: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of each row: higher score first, equal scores by lower index.

    Args:
        scores: (n,) or (B, n) float, integer or bool scores; not modified. NaN ranks as -inf.
        k: how many to return; clipped to n. 0 gives empty results.

    Returns:
        (indices int64, values) of shape (k,) or (B, k); values keep the input's dtype (bool as
        uint8) with NaN returned as -inf. Masked (-inf) entries are returned like any other
        when a row has fewer than k finite scores: filter with `np.isfinite(values)`.

    Raises:
        ValueError: k < 0, or scores not 1-D/2-D.
        TypeError: a non-numeric dtype.
    """
    one_row = np.ndim(scores) == 1
    a = _as_scores(scores)
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    b, n = a.shape
    k = min(k, n)
    if b == 0 or k == 0:
        idx = np.zeros((b, k), np.int64)
        val = np.zeros((b, k), a.dtype)
    else:
        if 4 * k >= n:
            # a big share of the row: one stable sort gives the rule directly
            idx = np.argsort(_descending_key(a), axis=1, kind="stable")[:, :k].astype(np.int64, copy=False)
        else:
            idx = _fix_boundary(a, _partial(a, k))
            idx.sort(axis=1)  # ascending index, so the stable sort below breaks ties by index
            order = np.argsort(_descending_key(np.take_along_axis(a, idx, axis=1)), axis=1, kind="stable")
            idx = np.take_along_axis(idx, order, axis=1)
        val = np.take_along_axis(a, idx, axis=1)
    return (idx[0], val[0]) if one_row else (idx, val)


def _fix_boundary(a: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Replace the arbitrary choice among items tied with the k-th score by the lowest indices.

    Every item scoring above the k-th score is in any k-largest set; only which of the items
    *equal* to it were kept can differ. Rows where all of those were kept are already right;
    in the others the set becomes (score > t) plus the first `kept` items with score == t.
    """
    vals = np.take_along_axis(a, part, axis=1)
    kth = vals.min(axis=1)  # the k-th largest score of each row
    kept = (vals == kth[:, None]).sum(axis=1)
    tied_total = np.empty(len(a), np.int64)
    step = max(1, FIXUP_ELEMENTS // max(a.shape[1], 1))  # rows per pass: the (rows, n) bool stays small
    for s in range(0, len(a), step):
        tied_total[s : s + step] = np.count_nonzero(a[s : s + step] == kth[s : s + step, None], axis=1)
    bad = np.flatnonzero(tied_total > kept)
    if len(bad):
        rows, t = a[bad], kth[bad, None]
        tied = rows == t
        take = (rows > t) | (tied & (np.cumsum(tied, axis=1) <= kept[bad, None]))
        part = part.copy()
        part[bad] = np.nonzero(take)[1].reshape(len(bad), part.shape[1])
    return part


# -- masking ----------------------------------------------------------------------------------


def mask(
    scores: np.ndarray, seen: sp.spmatrix | sp.sparray | Sequence[int] | np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """Set the scores of already-seen items to -inf, in place, and return `scores`.

    Args:
        scores: float (n,) or (B, n), writable (see `writable`).
        seen: a sparse (n_users, n) matrix, row `rows[i]` masking row i of `scores` (non-zero
            entries count as seen), or a sequence of column indices masked in every row.
        rows: for a sparse `seen`, its row of each score row; None means 0..B-1.

    Raises:
        TypeError: integer scores (they cannot hold -inf; cast to float first).
        ValueError: `rows` does not match the score rows, or `seen` has another item count.
    """
    if scores.dtype.kind != "f":
        raise TypeError(f"only float scores can be masked with -inf, got dtype {scores.dtype}; cast to float first")
    if not sp.issparse(seen):
        cols = np.asarray(list(seen) if not isinstance(seen, np.ndarray) else seen, dtype=np.int64)
        if len(cols):
            scores[..., cols] = -np.inf
        return scores
    view = scores if scores.ndim == 2 else scores[None, :]
    csr = sp.csr_matrix(seen)
    if csr.shape[1] != view.shape[1]:
        raise ValueError(f"seen matrix has {csr.shape[1]} items but the scores have {view.shape[1]}")
    rows = np.arange(len(view), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) != len(view):
        raise ValueError(f"{len(rows)} seen rows given for {len(view)} score rows")
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):
        sub = csr[int(rows[0]) : int(rows[-1]) + 1]  # contiguous rows: a cheap slice
    else:
        sub = csr[rows]
    r = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(sub.indptr))
    nz = sub.data != 0
    view[r[nz], sub.indices[nz]] = -np.inf
    return scores


def writable(scores: np.ndarray) -> np.ndarray:
    """The scores as a C-contiguous float32 array that may be overwritten (masked).

    A fresh array a model computed for this call (it owns its memory) is used as is; views
    (popularity's broadcast row, slices of a cached matrix) are copied so masking never writes
    into a model's state. Skipping the copy saves a pass over B x n_items floats per block.
    """
    if scores.dtype == np.float32 and scores.flags.owndata and scores.flags.writeable and scores.flags.c_contiguous:
        return scores
    return np.array(scores, dtype=np.float32, order="C", copy=True)


# -- the chunked loop -------------------------------------------------------------------------


def row_blocks(rows: np.ndarray | int, block_size: int) -> Iterator[np.ndarray]:
    """Consecutive blocks of at most `block_size` row indices (of `rows`, or of range(rows))."""
    if block_size < 1:
        raise ValueError(f"block size must be >= 1, got {block_size}")
    rows = np.arange(rows, dtype=np.int64) if isinstance(rows, int | np.integer) else np.asarray(rows, dtype=np.int64)
    for start in range(0, len(rows), block_size):
        yield rows[start : start + block_size]


def iter_topk(
    score_fn: ScoreFn,
    rows: np.ndarray | int,
    k: int,
    block_size: int = 1024,
    seen: sp.spmatrix | sp.sparray | None = None,
    seen_offset: int = 0,
    allowed: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (rows, item indices (B, k'), scores (B, k')) block by block, k' = min(k, n_items).

    Memory is O(block_size x n_items): scores are computed, masked and reduced one block at a
    time and never kept.

    Args:
        score_fn: row indices -> (B, n_items) scores (e.g. `Recommender.score`).
        rows: the rows to rank (an int n means 0..n-1).
        seen: (n_users, n_items) items to mask per row; row `r - seen_offset` masks row r (a
            Dask block passes its own slice of the history with its first row as offset).
        allowed: (n_items,) item indices that may be ranked (e.g. the cold candidates); the
            others score -inf.
    Masked items come back with a score of -inf when a row has fewer than k unmasked items.
    """
    keep = None
    for batch in row_blocks(rows, block_size):
        scores = writable(score_fn(batch))
        if seen is not None:
            mask(scores, seen, batch - seen_offset)
        if allowed is not None:
            if keep is None:
                keep = np.zeros(scores.shape[1], dtype=bool)
                keep[np.asarray(allowed, dtype=np.int64)] = True
            scores[:, ~keep] = -np.inf
        idx, val = topk(scores, k)
        del scores
        yield batch, idx, val
