"""A ridge map from item content to a trained model's item vectors, for items never seen in training.

The collaborative vector of a warm item is what the model learned from its interactions; a cold
item has none. Regressing the warm items' vectors on their content features and applying the map
to a cold item's features gives it a vector in the same space, so it competes with warm items
on the model's own dot product (the "content to collaborative" mapping of van den Oord et al.,
NeurIPS 2013, and Barkan et al.'s CB2CF, RecSys 2019; here linear, fitted in closed form).

The rows are weighted: an item seen in few interactions has a vector that is still mostly its
initialisation and penalty, so it should pull the fit less than a well-trained one.

The features and weights are fixed for a whole training run while the targets change at every
validation export, so the system matrix is factorised once (`RidgeMap`) and each export costs
one product with the targets and a triangular solve.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from mmrec.errors import ModelError

#: rows per block when the primal system and right-hand side are accumulated (float64 blocks of
#: CHUNK x d, instead of a float64 copy of the whole feature table)
CHUNK = 16384


class RidgeMap:
    """Ridge regression from fixed features to any targets: argmin_W sum_i w_i |f_i W - t_i|^2 + lam |W|^2.

    Solved in the primal (a d x d system, accumulated over blocks of rows) when there are at least
    as many rows as features, and in the dual (rows x rows) otherwise; both give the same W. The
    features are kept as given (float32 stays float32); sums are taken in float64.

    Args:
        features: (n, d) the rows' features.
        weights: (n,) non-negative row weights.
        lam: the ridge penalty (> 0: the system is then positive definite whatever the features).
    """

    def __init__(self, features: np.ndarray, weights: np.ndarray, lam: float) -> None:
        features = np.asarray(features)
        if features.dtype not in (np.float32, np.float64):
            features = features.astype(np.float32)
        weights = np.asarray(weights, dtype=np.float64)
        if features.ndim != 2:
            raise ModelError(f"content map: features must be 2-D, got shape {features.shape}")
        if weights.shape != (features.shape[0],):
            raise ModelError(f"content map: {weights.shape} weights for {features.shape[0]} rows")
        if not np.all(np.isfinite(weights)) or (weights < 0).any():
            raise ModelError("content map: weights must be finite and >= 0")
        if not np.all(np.isfinite(features)):
            raise ModelError("content map: features must be finite")
        if not lam > 0:
            raise ModelError(f"content map: lam must be > 0, got {lam}")
        n, d = features.shape
        self.dual = n < d
        self._features, self._weights = features, weights
        if self.dual:  # n < d: the scaled rows S F are at most d x d numbers
            self._scaled = features.astype(np.float64) * np.sqrt(weights)[:, None]
            gram = self._scaled @ self._scaled.T
        else:  # (S F)^T (S F) = F^T W F, block by block
            gram = np.zeros((d, d))
            for s in range(0, n, CHUNK):
                block = features[s : s + CHUNK].astype(np.float64)
                gram += block.T @ (block * weights[s : s + CHUNK, None])
        gram[np.diag_indices_from(gram)] += lam
        self._factor = scipy.linalg.cho_factor(gram, lower=True)

    def solve(self, targets: np.ndarray) -> np.ndarray:
        """W (d, k) for targets (n, k) of the same rows as the features."""
        targets = np.asarray(targets, dtype=np.float64)
        n = self._features.shape[0]
        if targets.ndim != 2 or targets.shape[0] != n:
            raise ModelError(f"content map: targets of shape {targets.shape} for {n} rows")
        if self.dual:  # W = (SF)^T ((SF)(SF)^T + lam I)^-1 S T
            return self._scaled.T @ scipy.linalg.cho_solve(self._factor, targets * np.sqrt(self._weights)[:, None])
        rhs = np.zeros((self._features.shape[1], targets.shape[1]))  # (SF)^T S T = F^T W T
        for s in range(0, n, CHUNK):
            rhs += self._features[s : s + CHUNK].astype(np.float64).T @ (
                targets[s : s + CHUNK] * self._weights[s : s + CHUNK, None]
            )
        return scipy.linalg.cho_solve(self._factor, rhs)
