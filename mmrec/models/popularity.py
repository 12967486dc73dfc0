"""Most-popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.models.base import Recommender
from mmrec.models.registry import register_model


@register_model
class Popularity(Recommender):
    """Scores each item by its number of training interactions (the same list for every user).

    It is also the fallback for users without history, so every other model can rely on it.
    """

    name = "popularity"

    def __init__(self) -> None:
        super().__init__()
        self.item_counts: np.ndarray | None = None

    def _fit(self, train: Interactions, valid: sp.csr_matrix | None) -> None:
        self.item_counts = np.asarray(train.matrix.sum(axis=0)).ravel().astype(np.float32)

    def _score(self, users: np.ndarray) -> np.ndarray:
        assert self.item_counts is not None
        return np.broadcast_to(self.item_counts, (len(users), len(self.item_counts)))

    def _score_history(self, rows: sp.csr_matrix) -> np.ndarray:
        assert self.item_counts is not None
        return np.broadcast_to(self.item_counts, (rows.shape[0], len(self.item_counts)))

    def score_parts(self, user: int, item: int) -> dict[str, float]:
        assert self.item_counts is not None
        return {"popularity": float(self.item_counts[item])}

    def _state(self) -> dict[str, np.ndarray]:
        assert self.item_counts is not None
        return {"item_counts": self.item_counts}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.item_counts = state["item_counts"]
