"""A tiny, fully in-memory serving state for API tests (tests/fixtures/tiny + an item-KNN model).

- users u1..u5 are in the model; u6 has interactions but is not in the model (history path);
  u7 is in the users list without any interaction (fallback path); u1 and u2 have precomputed
  lists (u1's complete, u2's shorter than k), u3..u5 none (live model scoring).
- text vectors for every item, image vectors only for i1..i3 (the items with a picture).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mmrec.constants import ITEM_ID, USER_ID
from mmrec.data.adapters import read_tables
from mmrec.data.contract import load_dataset_spec
from mmrec.data.interactions import Interactions
from mmrec.explain import explain
from mmrec.models import create_model
from mmrec.serve.catalog import Catalog
from mmrec.serve.loader import build_indexes
from mmrec.serve.state import ServingState

PRECOMPUTED_U1 = [("i8", 0.9), ("i7", 0.8)]  # u1's two unseen items: a complete nightly list
PRECOMPUTED_U2 = [("i7", 0.5)]  # shorter than what the model can rank for u2


class DictRecs:
    """Precomputed top-K held in a dict (stands in for the online store in unit tests)."""

    def __init__(self, rows: dict[str, list[tuple[str, float]]]) -> None:
        self.rows = rows

    def get(self, user_id: str) -> list[tuple[str, float]] | None:
        return self.rows.get(user_id)


def tiny_frames(dataset_yaml: Path) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    spec = load_dataset_spec(dataset_yaml)
    tables = read_tables(spec)
    return tables["items"][0], tables["interactions"][0], spec.root_path


def fit_itemknn(interactions: pd.DataFrame, item_ids: list[str], users: list[str]) -> object:
    inter = interactions[interactions[USER_ID].isin(users)]
    rows = pd.Index(users).get_indexer(inter[USER_ID])
    cols = pd.Index(item_ids).get_indexer(inter[ITEM_ID])
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(item_ids)))
    m.data[:] = 1.0
    return create_model("itemknn").fit(
        Interactions(m, np.asarray(users, dtype=object), np.asarray(item_ids, dtype=object))
    )


def tiny_state(dataset_yaml: Path, version: str = "1") -> ServingState:
    items, inter, root = tiny_frames(dataset_yaml)
    item_ids = items[ITEM_ID].astype(str).tolist()
    model = fit_itemknn(inter, item_ids, ["u1", "u2", "u3", "u4", "u5"])
    rng = np.random.default_rng(0)
    text = rng.normal(size=(8, 6)).astype(np.float32)
    image = rng.normal(size=(3, 4)).astype(np.float32)  # only i1..i3 have a picture
    views = {
        "text": (item_ids, text),
        "image": (item_ids[:3], image),
        "fused": (item_ids, np.hstack([text, np.vstack([image, np.zeros((5, 4), np.float32)])])),
    }
    catalog = Catalog(items, inter, users=[*sorted(set(inter[USER_ID])), "u7"], root=root)
    return ServingState(
        version=version,
        catalog=catalog,
        model=model,
        recs=DictRecs({"u1": PRECOMPUTED_U1, "u2": PRECOMPUTED_U2}),
        similar=build_indexes(views),
        explainer=explain,
        info={"source": "tiny"},
    )


class ListSource:
    """A StateSource handing out prepared states in turn (`advance()` moves to the next)."""

    def __init__(self, states: list[ServingState]) -> None:
        self.states = states
        self.pos = 0
        self.loads = 0

    def version(self) -> str:
        return self.states[self.pos].version

    def load(self) -> ServingState:
        self.loads += 1
        return self.states[self.pos]

    def advance(self) -> None:
        self.pos += 1
