"""The one recommender contract (Cornac style).

A model is constructed with explicit hyper-parameters, fitted on an `Interactions` training set
(with an optional validation matrix for early stopping), then scores users against every item.
`save`/`load` write the constructor arguments as JSON beside the learned state, so a saved
model is reloaded without the training code path and can be cloned by reading its signature.
"""

from __future__ import annotations

import inspect
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.errors import ModelError
from mmrec.io import atomic_dir
from mmrec.ranking import iter_topk


def popularity_scores(matrix: sp.csr_matrix) -> np.ndarray:
    """Training interaction count per item (float32): what users without history are shown."""
    return np.asarray(sp.csr_matrix(matrix).sum(axis=0), dtype=np.float32).ravel()


class Recommender(ABC):
    """Base class of every model.

    Subclasses set `name`, take hyper-parameters as keyword constructor arguments stored under
    the same attribute names, implement `_fit`, `_score`, and `_state`/`_load_state`.

    Attributes (after fit):
        user_ids, item_ids: the index the model was trained on.
        history: per-epoch log, e.g. [{"epoch": 1, "loss": .., "valid_recall@20": ..}].
        train_seconds, epochs: wall time of fit and epochs run (1 for closed-form models).
    """

    name: ClassVar[str]
    #: modalities the model needs as item features (multimodal models); empty for CF models.
    required_modalities: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.user_ids: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None
        self.train_matrix: sp.csr_matrix | None = None
        self.history: list[dict[str, float]] = []
        #: what the model was trained from (split/data/feature hashes; see mmrec.provenance)
        self.provenance: dict[str, Any] = {}
        self.train_seconds: float = 0.0
        self.epochs: int = 0
        self.best_epoch: int = 0

    # -- hyper-parameters -------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [n for n, p in sig.parameters.items() if n != "self" and p.kind in kinds]

    def get_params(self) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self.param_names()}

    def clone(self, **overrides: Any) -> Recommender:
        return type(self)(**{**self.get_params(), **overrides})

    # -- training -----------------------------------------------------------------------------
    def fit(self, train: Interactions, valid: sp.csr_matrix | None = None) -> Recommender:
        """Fit on `train`; `valid` (same index) drives early stopping where the model has epochs."""
        for modality in self.required_modalities:
            train.require(modality)
        if valid is not None and valid.shape != train.matrix.shape:
            raise ModelError(f"valid matrix shape {valid.shape} does not match train {train.matrix.shape}")
        self.user_ids = np.asarray(train.user_ids)
        self.item_ids = np.asarray(train.item_ids)
        self.train_matrix = sp.csr_matrix(train.matrix, dtype=np.float32)
        self.history = []
        start = time.perf_counter()
        self._fit(train, valid)
        self.train_seconds = time.perf_counter() - start
        if self.epochs == 0:
            self.epochs = 1
        return self

    @abstractmethod
    def _fit(self, train: Interactions, valid: sp.csr_matrix | None) -> None: ...

    # -- inference ------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.item_ids is None:
            raise ModelError(f"model {self.name!r} is not fitted; call fit() or load() first")

    @property
    def n_items(self) -> int:
        self._check_fitted()
        assert self.item_ids is not None
        return len(self.item_ids)

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Scores of `users` (row indices) for `items` (column indices; all when None).

        Returns:
            float32 array of shape (len(users), len(items) or n_items); higher is better.
        """
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64)
        scores = self._score(users)
        return scores if items is None else scores[:, np.asarray(items, dtype=np.int64)]

    @abstractmethod
    def _score(self, users: np.ndarray) -> np.ndarray: ...

    def recommend(
        self, users: np.ndarray, k: int = 20, exclude_seen: bool = True, batch_size: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and their scores per user, the user's training items masked.

        Returns:
            (items (n, k) int64, scores (n, k) float32), best first.
        """
        self._check_fitted()
        seen = self.train_matrix if exclude_seen else None
        idx, val = [], []
        for _, top, v in iter_topk(self.score, np.asarray(users, dtype=np.int64), k, batch_size, seen=seen):
            idx.append(top)
            val.append(v)
        if not idx:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate(idx), np.concatenate(val)

    # -- users the model was not trained on ------------------------------------------------------
    def history_rows(self, histories: Sequence[Sequence[int]]) -> sp.csr_matrix:
        """Binary (n, n_items) rows of item indices, validated against the model's catalogue."""
        n_items = self.n_items
        indptr = [0]
        indices: list[int] = []
        for row, hist in enumerate(histories):
            idx = np.unique(np.asarray(list(hist), dtype=np.int64))
            if len(idx) and (idx.min() < 0 or idx.max() >= n_items):
                raise ModelError(f"history {row} holds item indices outside 0..{n_items - 1}")
            indices.extend(idx.tolist())
            indptr.append(len(indices))
        data = np.ones(len(indices), np.float32)
        return sp.csr_matrix(
            (data, np.asarray(indices, np.int64), np.asarray(indptr)), shape=(len(indptr) - 1, n_items)
        )

    def score_history(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """Scores of users the model was not trained on, from the items they interacted with.

        This is how a new user (or an anonymous session) gets personalised recommendations from a
        handful of item ids without retraining. Each model folds the history into its own user
        representation (`_score_history`); an empty history falls back to popularity.

        Args:
            histories: per user, item column indices (the model's `item_ids` order).

        Returns:
            float32 (len(histories), n_items); the history items are not masked here.
        """
        self._check_fitted()
        rows = self.history_rows(histories)
        scores = np.array(self._score_history(rows), dtype=np.float32, copy=True)
        empty = np.diff(rows.indptr) == 0
        if empty.any():
            assert self.train_matrix is not None
            scores[empty] = popularity_scores(self.train_matrix)[None, :]
        return scores

    def _score_history(self, rows: sp.csr_matrix) -> np.ndarray:
        raise ModelError(f"model {self.name!r} cannot score users outside its training set")

    # -- explanations ------------------------------------------------------------------------------
    def score_parts(self, user: int, item: int) -> dict[str, float]:
        """The score of (user, item) split into additive parts by source.

        Keys are "collaborative", "popularity", "content" or modality names; values sum to
        `score(user, item)`. Models whose score does not decompose report one part.
        """
        return {"collaborative": float(self.score(np.asarray([user]), np.asarray([item]))[0, 0])}

    def item_affinity(self, item: int, others: np.ndarray) -> np.ndarray:
        """How much each of `others` (item indices) supports recommending `item`.

        Used to find the user's past items behind a recommendation. Neighbourhood models return
        the exact term each item adds to the score; factor models the cosine of item vectors.
        The default (no item-item structure) is zero.
        """
        return np.zeros(len(others), dtype=np.float32)

    # -- persistence ----------------------------------------------------------------------------
    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays to save (numpy)."""

    @abstractmethod
    def _load_state(self, state: dict[str, np.ndarray]) -> None: ...

    def save(self, path: str | Path) -> Path:
        """Write `model.json` (name, params, training summary), `state.npz` and the index, atomically."""
        self._check_fitted()
        path = Path(path)
        with atomic_dir(path) as tmp:
            meta = {
                "name": self.name,
                "params": self.get_params(),
                "train_seconds": self.train_seconds,
                "epochs": self.epochs,
                "best_epoch": self.best_epoch,
                "history": self.history,
                "provenance": getattr(self, "provenance", {}),
            }
            (tmp / "model.json").write_text(json.dumps(meta, indent=2, default=float))
            arrays = {f"state__{k}": v for k, v in self._state().items()}
            assert self.train_matrix is not None
            m = self.train_matrix
            np.savez(
                tmp / "state.npz",
                user_ids=np.asarray(self.user_ids, dtype=str),
                item_ids=np.asarray(self.item_ids, dtype=str),
                train_indptr=m.indptr,
                train_indices=m.indices,
                **arrays,  # type: ignore[arg-type]  # numpy's stub reads ** as allow_pickle
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        path = Path(path)
        meta_file = path / "model.json"
        if not meta_file.is_file():
            raise ModelError(f"{meta_file}: not a saved mmrec model")
        meta = json.loads(meta_file.read_text())
        if meta["name"] != cls.name:
            raise ModelError(f"{path} holds a {meta['name']!r} model, not {cls.name!r}; use mmrec.models.load_model")
        model = cls(**meta["params"])
        with np.load(path / "state.npz", allow_pickle=False) as z:
            model.user_ids = z["user_ids"].astype(object)
            model.item_ids = z["item_ids"].astype(object)
            n_u, n_i = len(model.user_ids), len(model.item_ids)
            indices = z["train_indices"]
            model.train_matrix = sp.csr_matrix(
                (np.ones(len(indices), np.float32), indices, z["train_indptr"]), shape=(n_u, n_i)
            )
            model._load_state({k[len("state__") :]: z[k] for k in z.files if k.startswith("state__")})
        model.train_seconds = meta.get("train_seconds", 0.0)
        model.epochs = meta.get("epochs", 0)
        model.best_epoch = meta.get("best_epoch", 0)
        model.history = meta.get("history", [])
        model.provenance = meta.get("provenance", {})
        return model
