"""Honest cold-slice figures: no credit from tie-breaks, and a permutation null.

Two problems of the cold-start slice (newest items, never in training) that the plain metrics hide:

- A model that cannot score unseen items (popularity, itemknn: every cold item gets the same
  score) is ranked by the tie rule alone. Whatever subset the sort happens to put first then
  "scores" (a partial sort gave popularity 0.2764 cold Recall@20 on ml100k where an independent
  evaluator got 0.0809). A user whose cold candidates are all tied is therefore reported at the
  exact expectation of a uniformly random order (`mmrec.metrics.expected_random_at_k`), and a
  model tied for every user is marked `unscored`.
- The slice is small and its hits concentrate on a few items, so the per-user random expectation
  understates how well a *single* arbitrary global order can do (on ml100k one shared random order
  scores 0.116 +/- 0.093). `permutation_null` ranks the slice with many random global orders (the
  same order for every user, as a popularity-like model would) and gives the model's p-value
  against that distribution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from mmrec.evaluate import UserMetrics
from mmrec.metrics import METRICS, expected_random_at_k, ideal_dcg, per_user_metrics

ScoreFn = Callable[[np.ndarray], np.ndarray]


def tied_users(
    score_fn: ScoreFn, users: np.ndarray, candidates: np.ndarray, batch_size: int = 1024, rtol: float = 1e-6
) -> np.ndarray:
    """Per user of `users`: True when the model gives every candidate the same score (all tied).

    Scores equal within `rtol` of their magnitude count as tied (float noise of a dot product
    with zero vectors); non-finite scores are treated as -inf, as the ranking core does.
    """
    users = np.asarray(users, dtype=np.int64)
    candidates = np.asarray(candidates, dtype=np.int64)
    out = np.zeros(len(users), dtype=bool)
    if len(candidates) <= 1:
        out[:] = True
        return out
    for start in range(0, len(users), batch_size):
        block = np.asarray(score_fn(users[start : start + batch_size]), dtype=np.float64)[:, candidates]
        block = np.where(np.isfinite(block), block, -np.inf)
        hi, lo = block.max(axis=1), block.min(axis=1)
        scale = np.maximum(np.abs(hi), np.abs(lo))
        with np.errstate(invalid="ignore"):
            out[start : start + batch_size] = (hi == lo) | (hi - lo <= rtol * np.where(np.isfinite(scale), scale, 0.0))
    return out


def without_tie_credit(um: UserMetrics, tied: np.ndarray, ks: Sequence[int]) -> UserMetrics:
    """`um` with the rows of tied users replaced by their exact random-order expectation."""
    tied = np.asarray(tied, dtype=bool)
    if not tied.any():
        return um
    values = {name: v.copy() for name, v in um.values.items()}
    for k in ks:
        exp = expected_random_at_k(um.n_relevant[tied], um.n_items, k)
        for m in METRICS:
            values[f"{m}@{k}"][tied] = exp[m]
    return UserMetrics(um.users, values, um.top, um.n_relevant, um.n_items)


def cold_summary(um: UserMetrics, tied: np.ndarray, ks: Sequence[int]) -> tuple[UserMetrics, dict[str, Any]]:
    """The tie-corrected per-user metrics and their metrics.json block.

    The block holds the usual means plus `tied_users` (share of users whose candidates were all
    tied, reported at the random expectation) and `unscored: true` when that share is 1: the model
    cannot rank cold items at all, and its figures are the random expectation by construction.
    """
    fixed = without_tie_credit(um, tied, ks)
    block = fixed.summary(ks)
    share = float(np.mean(tied)) if len(tied) else 0.0
    block["tied_users"] = round(share, 6)
    if len(tied) and share == 1.0:
        block["unscored"] = True
    return fixed, block


def permutation_null(
    target: sp.csr_matrix,
    exclude: sp.csr_matrix | None,
    candidates: np.ndarray,
    ks: Sequence[int],
    permutations: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = ("recall@20", "ndcg@20"),
) -> dict[str, Any]:
    """Mean metrics of `permutations` random global orders of the candidates (one order for all users).

    The users and targets are those `mmrec.evaluate.user_metrics` evaluates (fair targets: inside
    the candidates, not in `exclude`). Returns per metric the null's mean, std, 95th and 99th
    percentiles and the sorted draws' summary, plus the users and candidate count; compare a
    model with `p_value`.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    dense, n_rel = _slice_targets(target, exclude, candidates)
    kmax = max(ks)
    wanted = [m for m in metrics if int(m.split("@")[1]) in ks]
    if len(n_rel) == 0 or not wanted:
        return {"permutations": 0, "users": 0, "candidates": len(candidates), "metrics": {}}
    rng = np.random.default_rng(seed)
    draws = {m: np.empty(permutations) for m in wanted}
    kk = tuple(sorted({int(m.split("@")[1]) for m in wanted}))
    for p in range(permutations):
        order = rng.permutation(len(candidates))[:kmax]
        hits = dense[:, order]
        if hits.shape[1] < kmax:  # fewer candidates than K: the whole (short) list, as evaluate ranks it
            hits = np.pad(hits, ((0, 0), (0, kmax - hits.shape[1])))
        vals = per_user_metrics(hits, n_rel, kk)
        for m in wanted:
            draws[m][p] = vals[m].mean()
    return {
        "permutations": int(permutations),
        "seed": int(seed),
        "users": len(n_rel),
        "candidates": len(candidates),
        "metrics": {
            m: {
                "mean": float(d.mean()),
                "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                "q95": float(np.quantile(d, 0.95)),
                "q99": float(np.quantile(d, 0.99)),
                "max": float(d.max()),
            }
            for m, d in draws.items()
        },
        "_draws": draws,  # dropped before writing (p_values reads it)
    }


def _slice_targets(
    target: sp.csr_matrix, exclude: sp.csr_matrix | None, candidates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(hits of the evaluated users over the candidates (users, candidates) bool, their target counts).

    The users and targets `mmrec.evaluate.user_metrics` evaluates: targets inside the
    candidates and not in `exclude`, users with at least one.
    """
    t = sp.csr_matrix(target)[:, candidates]
    if exclude is not None:
        ex = sp.csr_matrix(exclude)[:, candidates]
        t = sp.csr_matrix(t - t.multiply(ex))
    t.eliminate_zeros()
    n_rel = np.diff(t.indptr)
    users = np.flatnonzero(n_rel > 0)
    return np.asarray(t[users].todense()) > 0, n_rel[users]


#: per-user weight of one hit in a metric that sums over the top K (recall, NDCG, precision), given
#: the user's target count n and K: what a global order gains by placing an item a user wants
_HIT_WEIGHT: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "recall": lambda n, k: 1.0 / n,
    "ndcg": lambda n, k: 1.0 / ideal_dcg(n, k),
    "precision": lambda n, k: np.full(len(n), 1.0 / k),
}


def ceilings(
    target: sp.csr_matrix,
    exclude: sp.csr_matrix | None,
    candidates: np.ndarray,
    metrics: Sequence[str] = ("recall@20", "ndcg@20"),
) -> dict[str, Any]:
    """The most any model can score on the slice: with one global order, and with a perfect personal one.

    Why: a lift over random says little without its ceiling. On a small slice whose hits gather on
    a few items, the best *global* order (what a perfect popularity model would be) can already be
    far above random, and a perfect ranking caps the lift (Recall@K below 1 for users with more
    than K targets). A model above the global ceiling must be personalising.

    `global` is exact: Recall, NDCG and precision of a global order are each a sum over its
    positions of the position's discount (non-increasing) times the item's summed per-user hit
    weight (1/n for recall, 1/IDCG for NDCG), so ranking items by that weight is optimal
    (rearrangement inequality). Metrics other than those three are skipped.

    Returns:
        {"users", "candidates", "global": {metric: value}, "personal": {metric: value}}.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    dense, n_rel = _slice_targets(target, exclude, candidates)
    out: dict[str, Any] = {"users": len(n_rel), "candidates": len(candidates), "global": {}, "personal": {}}
    if not len(n_rel):
        return out
    for metric in metrics:
        name, k = metric.split("@")[0], int(metric.split("@")[1])
        if name not in _HIT_WEIGHT:
            continue
        gain = _HIT_WEIGHT[name](n_rel, k) @ dense  # (candidates,) summed per-user weight of each item
        best = dense[:, np.argsort(-gain, kind="stable")[:k]]
        if best.shape[1] < k:  # fewer candidates than K: the whole list, as evaluate ranks it
            best = np.pad(best, ((0, 0), (0, k - best.shape[1])))
        perfect = np.arange(k)[None, :] < np.minimum(n_rel, k)[:, None]  # each user's targets first
        for part, hits in (("global", best), ("personal", perfect)):
            out[part][metric] = float(per_user_metrics(hits, n_rel, (k,))[metric].mean())
    return out


def p_values(null: dict[str, Any], observed: dict[str, float]) -> dict[str, float | None]:
    """One-sided p-value of each observed metric against the null draws: (1 + #{null >= obs}) / (P + 1)."""
    draws = null.get("_draws") or {}
    out: dict[str, float | None] = {}
    for m, d in draws.items():
        if m in observed and observed[m] is not None:
            out[m] = float((1 + np.sum(d >= observed[m] - 1e-12)) / (len(d) + 1))
    return out


def public(null: dict[str, Any]) -> dict[str, Any]:
    """The null without its raw draws (what metrics.json stores)."""
    return {k: v for k, v in null.items() if not k.startswith("_")}
