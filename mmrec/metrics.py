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
    return np.asarray(h.any(axis=1), dtype=np.float64)


def _discounts(k: int) -> np.ndarray:
    """The DCG gain of ranks 1..k: rank r (1-based) -> 1/log2(r+1)."""
    return 1.0 / np.log2(np.arange(2, k + 2))


def ideal_dcg(n_relevant: np.ndarray, k: int) -> np.ndarray:
    """IDCG@k per user: the DCG of min(n_relevant, k) hits at the top (n_relevant >= 1)."""
    return np.cumsum(_discounts(k))[np.minimum(np.asarray(n_relevant), k).astype(int) - 1]


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    h, n = _check(hits, n_relevant, k)
    return (h * _discounts(k)).sum(axis=1) / ideal_dcg(n, k)


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


def expected_random_at_k(n_relevant: np.ndarray, n_candidates: int, k: int) -> dict[str, np.ndarray]:
    """Each metric's expected value per user when the candidates are ranked uniformly at random.

    With r relevant among n candidates every position is relevant with probability r/n, and two
    positions both with probability r(r-1)/(n(n-1)); so, with k' = min(k, n):
    recall = k'/n, precision = k' r / (n k), hit = 1 - C(n-r, k')/C(n, k'),
    ndcg = (r/n) sum_{j<=k'} 1/log2(j+1) / IDCG, and
    map = sum_{j<=k'} (1/j) [r/n + (j-1) r(r-1)/(n(n-1))] / min(r, k).
    This is the "random ranking" reference of a cold-start slice, exact rather than sampled.
    """
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    if n_rel.ndim != 1 or np.any(n_rel <= 0) or np.any(n_rel > n_candidates):
        raise ValueError(f"n_relevant must be 1-D with values in [1, n_candidates={n_candidates}]")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = float(n_candidates)
    kk = min(k, n_candidates)
    j = np.arange(1, kk + 1, dtype=np.float64)
    p1 = n_rel / n
    p2 = n_rel * (n_rel - 1) / (n * (n - 1)) if n > 1 else np.zeros_like(n_rel)
    miss = np.ones_like(n_rel)
    for i in range(kk):  # P(no relevant item in the first k') = prod (n-r-i)/(n-i)
        miss *= np.clip(n - n_rel - i, 0, None) / (n - i)
    return {
        "recall": np.full_like(n_rel, kk / n),
        "precision": p1 * kk / k,
        "hit": 1.0 - miss,
        "ndcg": p1 * _discounts(kk).sum() / ideal_dcg(n_rel, k),
        "map": ((p1[:, None] + (j[None, :] - 1) * p2[:, None]) / j[None, :]).sum(axis=1) / np.minimum(n_rel, k),
    }


METRIC_FUNCTIONS = {
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "precision": precision_at_k,
    "map": map_at_k,
    "hit": hit_at_k,
}


def per_user_metrics(hits: np.ndarray, n_relevant: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Every metric at every k for each user, keyed `name@k`: (n_users,) float64 arrays."""
    return {
        f"{name}@{k}": fn(hits, n_relevant, k).astype(np.float64) for k in ks for name, fn in METRIC_FUNCTIONS.items()
    }


def compute_all(
    hits: np.ndarray,
    n_relevant: np.ndarray,
    ks: tuple[int, ...],
    top_items: np.ndarray | None = None,
    n_items: int | None = None,
) -> dict[str, float]:
    """Mean of every metric at every k, keyed `name@k` (plus `coverage@k` when top_items is given)."""
    out: dict[str, float] = {}
    for k in ks:
        for name, fn in METRIC_FUNCTIONS.items():
            out[f"{name}@{k}"] = float(fn(hits, n_relevant, k).mean()) if len(hits) else 0.0
        if top_items is not None and n_items is not None and len(top_items):
            out[f"coverage@{k}"] = coverage_at_k(top_items, n_items, k)
    return out
