"""Pure, vectorised top-K ranking metrics.

Every function takes `hits`, a boolean matrix of shape (n_users, K) whose entry [u, j] says
whether the item ranked j+1 for user u is relevant, and `n_relevant`, the number of relevant
items per user (shape (n_users,)). Users with no relevant items must be removed by the caller:
their recall is undefined. Each function returns one value per user; `mean` happens at the end so
per-user values stay available for significance tests and slices.

Definitions follow the common full-ranking protocol (RecBole / Cornac):
- recall@k    = |hits in top k| / n_relevant
- precision@k = |hits in top k| / k
- hit@k       = 1 if any hit in top k
- ndcg@k      = DCG@k / IDCG@k, gain 1/log2(rank+1), IDCG over min(n_relevant, k) ideal hits
- map@k       = sum_j precision@j * hit_j / min(n_relevant, k)
"""

from __future__ import annotations

import numpy as np

METRICS = ("recall", "ndcg", "precision", "map", "hit")


def _check(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    hits = np.asarray(hits, dtype=bool)
    n_relevant = np.asarray(n_relevant)
    if hits.ndim != 2:
        raise ValueError(f"hits must be 2-D (n_users, K), got shape {hits.shape}")
    if n_relevant.shape != (hits.shape[0],):
        raise ValueError(f"n_relevant must have shape ({hits.shape[0]},), got {n_relevant.shape}")
    if not 1 <= k <= hits.shape[1]:
        raise ValueError(f"k must be in [1, {hits.shape[1]}] (the ranked list length), got {k}")
    if np.any(n_relevant <= 0):
        raise ValueError("every user needs at least one relevant item; drop users with an empty target")
    return hits[:, :k], n_relevant.astype(np.float64)


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    h, n = _check(hits, n_relevant, k)
    return h.sum(axis=1) / n


def precision_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    h, _ = _check(hits, n_relevant, k)
    return h.sum(axis=1) / k


def hit_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    h, _ = _check(hits, n_relevant, k)
    return h.any(axis=1).astype(np.float64)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    h, n = _check(hits, n_relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))  # rank r (1-based) -> 1/log2(r+1)
    dcg = (h * discounts).sum(axis=1)
    ideal_cum = np.cumsum(discounts)
    idcg = ideal_cum[np.minimum(n, k).astype(int) - 1]
    return dcg / idcg


def map_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    h, n = _check(hits, n_relevant, k)
    ranks = np.arange(1, k + 1)
    precision_at_j = np.cumsum(h, axis=1) / ranks
    return (precision_at_j * h).sum(axis=1) / np.minimum(n, k)


def coverage_at_k(top_items: np.ndarray, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one user's top-k list."""
    top_items = np.asarray(top_items)
    if top_items.ndim != 2 or not 1 <= k <= top_items.shape[1]:
        raise ValueError(f"top_items must be (n_users, K>= {k}), got shape {top_items.shape}")
    if n_items <= 0:
        raise ValueError("n_items must be positive")
    return float(np.unique(top_items[:, :k]).size) / n_items


METRIC_FUNCTIONS = {
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "precision": precision_at_k,
    "map": map_at_k,
    "hit": hit_at_k,
}


def compute_all(
    hits: np.ndarray, n_relevant: np.ndarray, ks: tuple[int, ...], top_items: np.ndarray | None = None, n_items: int | None = None
) -> dict[str, float]:
    """Mean of every metric at every k, keyed `name@k` (plus `coverage@k` when top_items is given)."""
    out: dict[str, float] = {}
    for k in ks:
        for name, fn in METRIC_FUNCTIONS.items():
            out[f"{name}@{k}"] = float(fn(hits, n_relevant, k).mean()) if len(hits) else 0.0
        if top_items is not None and n_items is not None and len(top_items):
            out[f"coverage@{k}"] = coverage_at_k(top_items, n_items, k)
    return out
