"""Top-K over a fitted model, chunk by chunk: the scoring loop of the batch job and of ad-hoc requests.

Scoring, masking and top-K selection run through `mmrec.ranking` (the same core as evaluation,
retrieval and the API), `batch_size` users at a time, so the full score matrix is never built.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mmrec import ranking
from mmrec.constants import DEFAULT_K, ITEM_ID, USER_ID
from mmrec.errors import ModelError
from mmrec.models.training import popularity_scores

if TYPE_CHECKING:
    from mmrec.models.base import Recommender


RANK = "rank"


SCORE = "score"


OUTPUT_COLUMNS = (USER_ID, ITEM_ID, RANK, SCORE)


def iter_topk(
    model: Recommender,
    users: np.ndarray | None = None,
    k: int = DEFAULT_K,
    batch_size: int = 1024,
    exclude: sp.csr_matrix | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (user indices, item indices (B, k), scores (B, k)) chunk by chunk.

    Args:
        model: a fitted Recommender; `model.score` supplies (B, n_items) scores per chunk.
        users: row indices of the model's users (all when None).
        exclude: (n_users, n_items) items to mask per user; masked entries come back with a
            score of -inf when a user has fewer than k unmasked items (callers drop them).
    """
    if model.item_ids is None or model.user_ids is None:
        raise ModelError(f"model {model.name!r} is not fitted; nothing to recommend from")
    if users is None:
        users = np.arange(len(model.user_ids), dtype=np.int64)
    users = np.asarray(users, dtype=np.int64)
    if exclude is not None:
        exclude = sp.csr_matrix(exclude)
        if exclude.shape != (len(model.user_ids), len(model.item_ids)):
            raise ModelError(f"exclude matrix shape {exclude.shape} does not match the model's index")
    yield from ranking.iter_topk(model.score, users, k, batch_size, seen=exclude)


def history_matrix(model: Recommender, interactions: pd.DataFrame | None) -> sp.csr_matrix:
    """What each user has already interacted with, over the model's index.

    The training matrix plus every (user, item) pair of `interactions` whose ids the model
    knows (validation and test interactions happened too; pairs with ids the model never saw
    cannot be masked and need not be).
    """
    assert model.user_ids is not None and model.item_ids is not None
    shape = (len(model.user_ids), len(model.item_ids))
    seen = sp.csr_matrix(
        model.train_matrix if model.train_matrix is not None else sp.csr_matrix(shape), dtype=np.float32
    )
    if interactions is None or not len(interactions):
        return seen
    rows = pd.Index(model.user_ids).get_indexer(interactions[USER_ID].astype(str))
    cols = pd.Index(model.item_ids).get_indexer(interactions[ITEM_ID].astype(str))
    keep = (rows >= 0) & (cols >= 0)
    extra = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=shape)
    out = sp.csr_matrix(seen + extra)
    out.data[:] = 1.0
    return out


def chunk_frame(model: Recommender, users: np.ndarray, idx: np.ndarray, val: np.ndarray) -> pd.DataFrame:
    """Long format (user_id, item_id, rank, score) of one chunk; masked (-inf) entries dropped."""
    assert model.user_ids is not None and model.item_ids is not None
    b, k = idx.shape
    valid = np.isfinite(val)
    user_ids = np.asarray(model.user_ids, dtype=object)[np.repeat(users, k)]
    item_ids = np.asarray(model.item_ids, dtype=object)[idx.ravel()]
    ranks = np.tile(np.arange(1, k + 1, dtype=np.int32), b)
    df = pd.DataFrame({USER_ID: user_ids, ITEM_ID: item_ids, RANK: ranks, SCORE: val.ravel().astype(np.float32)})
    return df[valid.ravel()].reset_index(drop=True)


def recommend_for_ids(
    model: Recommender,
    user_ids: Sequence[str],
    k: int = DEFAULT_K,
    exclude: sp.csr_matrix | None = None,
    batch_size: int = 1024,
    exclude_seen: bool = True,
) -> pd.DataFrame:
    """Top-K for the given user ids; ids the model never saw get the most popular items.

    Args:
        exclude: items to mask per user over the model's index; None with `exclude_seen`
            masks the model's training items.

    Returns:
        (user_id, item_id, rank, score) in the order of `user_ids` (duplicates collapsed).
    """
    assert model.user_ids is not None and model.item_ids is not None
    wanted = list(dict.fromkeys(str(u) for u in user_ids))
    rows = pd.Index(np.asarray(model.user_ids, dtype=str)).get_indexer(wanted)
    known = rows >= 0
    if exclude is None and exclude_seen:
        exclude = model.train_matrix
    frames = []
    if known.any():
        for batch, idx, val in iter_topk(model, rows[known], k, batch_size, exclude):
            frames.append(chunk_frame(model, batch, idx, val))
    unknown = [u for u, ok in zip(wanted, known, strict=True) if not ok]
    if unknown:
        train = model.train_matrix
        pop = popularity_scores(train) if train is not None else np.zeros(len(model.item_ids), np.float32)
        cold_user_scores = getattr(model, "cold_user_scores", None)  # a StrategyScorer applies its filters
        if cold_user_scores is not None:
            pop = cold_user_scores()
        idx, val = ranking.topk(pop[None, :], k)
        keep = np.isfinite(val[0])
        idx, val = idx[:, keep], val[:, keep]
        item_ids = np.asarray(model.item_ids, dtype=object)[idx[0]]
        for u in unknown:
            frames.append(
                pd.DataFrame(
                    {
                        USER_ID: u,
                        ITEM_ID: item_ids,
                        RANK: np.arange(1, len(item_ids) + 1, dtype=np.int32),
                        SCORE: val[0],
                    }
                )
            )
    if not frames:
        return pd.DataFrame({c: [] for c in OUTPUT_COLUMNS})
    out = pd.concat(frames, ignore_index=True)
    order = {u: i for i, u in enumerate(wanted)}
    out["_o"] = out[USER_ID].map(order)
    return out.sort_values(["_o", RANK], kind="stable").drop(columns="_o").reset_index(drop=True)
