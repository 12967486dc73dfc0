"""Index-encoded interaction data: what models train on and evaluation ranks over.

Ids are strings at every boundary; inside, users and items are rows and columns of sparse
matrices over one shared index, so train, valid, test and cold-start slices line up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mmrec.constants import ITEM_ID, USER_ID
from mmrec.errors import DataError


@dataclass(frozen=True)
class Interactions:
    """A user-item matrix with its id index; modality features travel with it as data.

    Attributes:
        matrix: (n_users, n_items) CSR, float32, 1.0 where the user interacted with the item.
        user_ids: row index -> user id (str).
        item_ids: column index -> item id (str).
        features: modality -> (n_items, d) float32 matrix aligned with item_ids; rows of items
            lacking that modality are zero and flagged False in `feature_masks`.
        feature_masks: modality -> (n_items,) bool, True where the item has that modality.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    feature_masks: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    def with_matrix(self, matrix: sp.csr_matrix) -> Interactions:
        """The same index and features over another matrix (e.g. the validation targets)."""
        return Interactions(matrix, self.user_ids, self.item_ids, self.features, self.feature_masks)

    def require(self, modality: str) -> np.ndarray:
        """The feature matrix for `modality`, or a clear error saying how to produce it."""
        if modality not in self.features:
            raise DataError(
                f"this model needs {modality!r} item features, but only {sorted(self.features) or 'none'} "
                f"were provided; run the extract_{modality} stage first"
            )
        return self.features[modality]


@dataclass(frozen=True)
class SplitData:
    """Train/valid/test (and optional cold-start test) over one shared user and item index.

    `cold_items` are item indices that never occur in `train` or `valid`; `cold_test` holds the
    interactions with them, evaluated separately with only cold items as candidates.
    `cold_valid` / `cold_valid_items` are the same for the older cold items kept for choosing
    cold-start settings (never in train, valid, test or cold_test either).
    """

    train: Interactions
    valid: sp.csr_matrix
    test: sp.csr_matrix
    cold_test: sp.csr_matrix | None = None
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    kind: str = "temporal"
    split_hash: str = ""
    cold_valid: sp.csr_matrix | None = None
    cold_valid_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def user_ids(self) -> np.ndarray:
        return self.train.user_ids

    @property
    def item_ids(self) -> np.ndarray:
        return self.train.item_ids

    @property
    def valid_set(self) -> Interactions:
        return self.train.with_matrix(self.valid)


def build_index(*id_columns: pd.Series | np.ndarray) -> np.ndarray:
    """Sorted unique string ids across several columns (a stable, reproducible index)."""
    parts = [np.asarray(c, dtype=str) for c in id_columns if len(c)]
    if not parts:
        return np.zeros(0, dtype=str)
    return np.unique(np.concatenate(parts)).astype(object)


def to_matrix(df: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> sp.csr_matrix:
    """Binary CSR of (user_id, item_id) pairs over the given index; repeats count once.

    Raises:
        DataError: a pair names a user or item absent from the index.
    """
    u_index = pd.Index(user_ids)
    i_index = pd.Index(item_ids)
    rows = u_index.get_indexer(df[USER_ID].astype(str))
    cols = i_index.get_indexer(df[ITEM_ID].astype(str))
    if (rows < 0).any() or (cols < 0).any():
        bad = df[(rows < 0) | (cols < 0)].head(3)
        raise DataError(
            f"interactions reference ids outside the index, e.g. {bad[[USER_ID, ITEM_ID]].to_dict('records')}"
        )
    m = sp.csr_matrix(
        (np.ones(len(df), dtype=np.float32), (rows, cols)), shape=(len(user_ids), len(item_ids)), dtype=np.float32
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def split_data_from_frames(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    cold_test: pd.DataFrame | None = None,
    items: pd.Series | np.ndarray | None = None,
    kind: str = "temporal",
    split_hash: str = "",
    cold_valid: pd.DataFrame | None = None,
) -> SplitData:
    """Encode split frames (user_id, item_id[, timestamp]) over one index.

    Args:
        items: the whole catalogue's item ids; items without interactions still get a column, so
            content-based models can recommend them.
    """
    frames = [train, valid, test] + [f for f in (cold_test, cold_valid) if f is not None]
    user_ids = build_index(*(f[USER_ID] for f in frames))
    item_ids = build_index(*(f[ITEM_ID] for f in frames), *([items] if items is not None else []))
    train_m = to_matrix(train, user_ids, item_ids)
    cold_m = to_matrix(cold_test, user_ids, item_ids) if cold_test is not None else None
    if cold_test is not None and len(cold_test):
        cold_items = pd.Index(item_ids).get_indexer(pd.unique(cold_test[ITEM_ID].astype(str)))
    else:
        cold_items = np.zeros(0, dtype=np.int64)
    cold_valid_m = to_matrix(cold_valid, user_ids, item_ids) if cold_valid is not None else None
    if cold_valid is not None and len(cold_valid):
        cold_valid_items = pd.Index(item_ids).get_indexer(pd.unique(cold_valid[ITEM_ID].astype(str)))
    else:
        cold_valid_items = np.zeros(0, dtype=np.int64)
    return SplitData(
        train=Interactions(train_m, user_ids, item_ids),
        valid=to_matrix(valid, user_ids, item_ids),
        test=to_matrix(test, user_ids, item_ids),
        cold_test=cold_m,
        cold_items=np.sort(np.asarray(cold_items, dtype=np.int64)),
        kind=kind,
        split_hash=split_hash,
        cold_valid=cold_valid_m,
        cold_valid_items=np.sort(np.asarray(cold_valid_items, dtype=np.int64)),
    )
