"""The evaluation protocol: full ranking over all items, the user's known items masked.

- Valid is ranked with the training items masked; test with training and validation items masked
  (both are history by then), as in RecBole's full-sort protocol the benchmarks compare against.
- Only users with at least one target item are evaluated.
- The cold-start slice ranks only the cold items (never seen in training) as candidates.
- Scores are computed in user batches, so memory is O(batch x n_items), never O(users x items).
- `user_metrics` keeps every user's values (`UserMetrics`): slices (sparse users) and paired
  bootstrap comparisons between models are computed from them; `evaluate_scores` is their mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from mmrec.constants import DEFAULT_KS
from mmrec.metrics import METRICS, per_user_metrics
from mmrec.ranking import iter_topk

if TYPE_CHECKING:
    from mmrec.models.base import Recommender

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user indices (B,) -> scores (B, n_items)


def rank_users(
    score_fn: ScoreFn,
    users: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    candidates: np.ndarray | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """Top-k item indices for each user, computed in batches.

    Positions that no rankable item fills (catalogue or candidate set smaller than k, or items
    masked) hold -1, so a short list is never padded with excluded items.

    Args:
        score_fn: maps user indices to a (B, n_items) score matrix.
        exclude: (n_users, n_items) items to mask per user (already seen).
        candidates: when given, only these item indices may be ranked.
    """
    out = []
    for _, top, val in iter_topk(score_fn, users, k, batch_size, seen=exclude, allowed=candidates):
        top = np.where(np.isneginf(val), -1, top)
        if top.shape[1] < k:
            top = np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)
        out.append(top)
    if not out:
        return np.zeros((0, k), dtype=np.int64)
    return np.concatenate(out)


@dataclass(frozen=True)
class UserMetrics:
    """Per-user metric values of one ranking run, kept so slices and paired tests can be computed.

    Means over users hide both *who* a model helps (sparse users, cold items) and how sure a
    difference between two models is; both need the per-user vectors, aligned across models
    because the users evaluated depend only on the target and the mask, never on the model.

    Attributes:
        users: evaluated user indices (those with a non-empty fair target), ascending.
        values: `name@k` -> (len(users),) float64, for every metric of `mmrec.metrics`.
        top: (len(users), max k) ranked item indices, -1 where no rankable item is left.
        n_relevant: (len(users),) size of each user's fair target.
        n_items: the number of rankable items (the candidate count when candidates were given),
            the denominator of coverage.
    """

    users: np.ndarray
    values: dict[str, np.ndarray]
    top: np.ndarray
    n_relevant: np.ndarray
    n_items: int

    def subset(self, keep: np.ndarray) -> UserMetrics:
        """The same run restricted to the users where `keep` (aligned with `users`) is True."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != self.users.shape:
            raise ValueError(f"keep must have shape {self.users.shape} (one flag per evaluated user), got {keep.shape}")
        values = {m: v[keep] for m, v in self.values.items()}
        return UserMetrics(self.users[keep], values, self.top[keep], self.n_relevant[keep], self.n_items)

    def summary(self, ks: Sequence[int]) -> dict[str, float]:
        """Means over users plus `coverage@k` and the user count: the shape of metrics.json blocks."""
        if len(self.users) == 0:
            res: dict[str, float] = {f"{m}@{k}": 0.0 for k in ks for m in (*METRICS, "coverage")}
            res["users"] = 0
            return res
        res = {name: float(v.mean()) for name, v in self.values.items()}
        filled = self.top >= 0
        for k in ks:
            res[f"coverage@{k}"] = float(np.unique(self.top[:, :k][filled[:, :k]]).size) / self.n_items
        res["users"] = len(self.users)
        return res


def user_metrics(
    score_fn: ScoreFn,
    target: sp.csr_matrix,
    exclude: sp.csr_matrix | None,
    ks: Sequence[int] = DEFAULT_KS,
    candidates: np.ndarray | None = None,
    batch_size: int = 1024,
) -> UserMetrics:
    """Rank every user with a non-empty fair target and keep each user's metric values.

    A target item that is also in `exclude` cannot be ranked, and one outside `candidates` is
    not in play, so both are dropped from the target before users are selected.
    """
    target = sp.csr_matrix(target)
    if candidates is not None:
        keep = np.zeros(target.shape[1], dtype=np.float32)
        keep[candidates] = 1.0
        target = sp.csr_matrix(target.multiply(keep[None, :]))
        target.eliminate_zeros()
    if exclude is not None:
        # an item both seen and in the target cannot be ranked: it is not a fair target
        target = sp.csr_matrix(target - target.multiply(exclude))
        target.eliminate_zeros()
    n_rel = np.diff(target.indptr)
    users = np.flatnonzero(n_rel > 0)
    kmax = max(ks)
    n_items = target.shape[1] if candidates is None else len(candidates)
    if len(users) == 0:
        empty = {f"{m}@{k}": np.zeros(0) for k in ks for m in METRICS}
        return UserMetrics(users, empty, np.zeros((0, kmax), np.int64), np.zeros(0, np.int64), n_items)
    top = rank_users(score_fn, users, kmax, exclude=exclude, candidates=candidates, batch_size=batch_size)
    filled = top >= 0
    hits = (np.asarray(target[users[:, None], np.where(filled, top, 0)].todense()) > 0) & filled
    return UserMetrics(users, per_user_metrics(hits, n_rel[users], tuple(ks)), top, n_rel[users], n_items)


def evaluate_scores(
    score_fn: ScoreFn,
    target: sp.csr_matrix,
    exclude: sp.csr_matrix | None,
    ks: Sequence[int] = DEFAULT_KS,
    candidates: np.ndarray | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean metrics over users with a non-empty target.

    Returns:
        `{"recall@20": .., "ndcg@20": .., ..., "coverage@20": .., "users": n}`.
    """
    return user_metrics(score_fn, target, exclude, ks, candidates, batch_size).summary(ks)


def evaluate_model(
    model: Recommender,
    target: sp.csr_matrix,
    exclude: sp.csr_matrix | None,
    ks: Sequence[int] = DEFAULT_KS,
    candidates: np.ndarray | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """`evaluate_scores` with a fitted model's `score` as the score function."""
    return evaluate_scores(model.score, target, exclude, ks=ks, candidates=candidates, batch_size=batch_size)
