"""The feature tables the Feast repository serves, built from pipeline artifacts (pure pandas/numpy).

One function per table; `mmrec.feast.export` writes them under `data/<name>/feast/tables/` and
points Feast at them. Every table has the entity key, its feature columns, `event_timestamp`
and `created` (ARCHITECTURE.md §8, feature_repo/data_sources.py).

Point-in-time semantics of the statistics (`item_stats`, `user_stats`): one snapshot row per
(key, day with activity), stamped at the *end* of that day (next midnight UTC) and aggregating
only interactions strictly before the stamp. A training row at time t joined as of t therefore
only ever sees interactions before t. A last "current" row per key summarises everything up to
the end of the data's last day; its stamp is chosen by the caller (the export time, never before
the data's end), which is what `materialize_incremental` picks up for the online store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mmrec.constants import ITEM_ID, MODALITIES, TIMESTAMP, USER_ID
from mmrec.errors import DataError

EVENT_TIMESTAMP = "event_timestamp"
CREATED = "created"
EMBEDDING = "embedding"
DAY = 86_400
STAT_FIELDS = ("interactions", "interactions_window", "days_since_first", "days_since_last")

# table -> (entity key, feature columns); the arrow types are in `arrow_schema`.
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    **{f"item_{m}_embedding": (ITEM_ID, (EMBEDDING, "encoder")) for m in MODALITIES},
    "item_fused_embedding": (ITEM_ID, (EMBEDDING, "modalities")),
    "item_model_embedding": (ITEM_ID, (EMBEDDING, "model", "model_version")),
    "user_embedding": (USER_ID, (EMBEDDING, "model", "model_version")),
    "item_stats": (ITEM_ID, STAT_FIELDS),
    "user_stats": (USER_ID, STAT_FIELDS),
    "user_recommendations": (USER_ID, ("item_ids", "scores", "model", "model_version")),
}


def arrow_schema(table: str) -> Any:  # -> pa.Schema
    """The exact parquet schema of a table, so empty tables still carry typed (list) columns."""
    import pyarrow as pa

    key, cols = TABLES[table]
    types = {
        EMBEDDING: pa.list_(pa.float32()),
        "encoder": pa.string(),
        "modalities": pa.list_(pa.string()),
        "model": pa.string(),
        "model_version": pa.string(),
        "interactions": pa.int64(),
        "interactions_window": pa.int64(),
        "days_since_first": pa.float32(),
        "days_since_last": pa.float32(),
        "item_ids": pa.list_(pa.string()),
        "scores": pa.list_(pa.float32()),
    }
    ts = pa.timestamp("us", tz="UTC")
    return pa.schema([(key, pa.string()), *[(c, types[c]) for c in cols], (EVENT_TIMESTAMP, ts), (CREATED, ts)])


def empty(table: str) -> pd.DataFrame:
    return arrow_schema(table).empty_table().to_pandas()


def _stamp_column(n: int, when: pd.Timestamp | None) -> pd.Series:
    """n copies of `when` (NaT when None: the caller stamps these rows later)."""
    return pd.Series(pd.DatetimeIndex([when] * n if when is not None else [pd.NaT] * n, tz="UTC"))


# -- embeddings -----------------------------------------------------------------------------------


def embedding_table(item_ids: Sequence[str], matrix: np.ndarray, encoder: str) -> pd.DataFrame:
    """One modality's vectors; rows stamped later (NaT here)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(item_ids):
        raise DataError(f"{encoder}: {len(item_ids)} item ids but a vector matrix of shape {matrix.shape}")
    if len(item_ids) and not np.isfinite(matrix).all():
        bad = [str(item_ids[i]) for i in np.flatnonzero(~np.isfinite(matrix).all(axis=1))[:5]]
        raise DataError(f"{encoder}: non-finite values in the vectors of items {bad}; re-run the extraction")
    return pd.DataFrame(
        {
            ITEM_ID: [str(i) for i in item_ids],
            EMBEDDING: list(matrix),
            "encoder": encoder,
            EVENT_TIMESTAMP: _stamp_column(len(item_ids), None),
            CREATED: _stamp_column(len(item_ids), None),
        }
    )


def fused_table(per_modality: Mapping[str, tuple[Sequence[str], np.ndarray]]) -> pd.DataFrame:
    """All modalities of an item in one vector, comparable by cosine across items.

    Each modality's vector is L2-normalised and scaled by 1/sqrt(M) (M: modalities the dataset
    has), a missing modality is zeros, and the concatenation is renormalised to unit length. For
    two items with every modality, cosine(fused) is the mean of the per-modality cosines; an item
    without a modality is compared on the ones it has. Items with no modality get no row.
    """
    mods = [m for m in MODALITIES if m in per_modality and len(per_modality[m][0])]
    if not mods:
        return empty("item_fused_embedding")
    ids = sorted({str(i) for m in mods for i in per_modality[m][0]})
    index = {iid: r for r, iid in enumerate(ids)}
    blocks, present = [], np.zeros((len(ids), len(mods)), bool)
    for j, m in enumerate(mods):
        m_ids, mat = per_modality[m]
        mat = np.asarray(mat, dtype=np.float32)
        block = np.zeros((len(ids), mat.shape[1]), np.float32)
        rows = np.array([index[str(i)] for i in m_ids], dtype=np.int64)
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        block[rows] = np.divide(mat, norms, out=np.zeros_like(mat), where=norms > 0)
        present[rows, j] = norms[:, 0] > 0
        blocks.append(block / np.sqrt(len(mods)))
    fused = np.concatenate(blocks, axis=1)
    norms = np.linalg.norm(fused, axis=1, keepdims=True)
    keep = norms[:, 0] > 0
    fused = np.divide(fused, norms, out=np.zeros_like(fused), where=norms > 0)
    names = np.array(mods, dtype=object)
    rows = np.flatnonzero(keep)
    return pd.DataFrame(
        {
            ITEM_ID: [ids[r] for r in rows],
            EMBEDDING: list(fused[rows]),
            "modalities": [list(names[present[r]]) for r in rows],
            EVENT_TIMESTAMP: _stamp_column(len(rows), None),
            CREATED: _stamp_column(len(rows), None),
        }
    )


def factor_table(key: str, ids: Sequence[str], factors: np.ndarray, model: str, version: str) -> pd.DataFrame:
    """A model's user or item factors; rows stamped later."""
    factors = np.asarray(factors, dtype=np.float32)
    if factors.ndim != 2 or factors.shape[0] != len(ids):
        raise DataError(f"model {model!r}: {len(ids)} {key}s but factors of shape {factors.shape}")
    return pd.DataFrame(
        {
            key: [str(i) for i in ids],
            EMBEDDING: list(factors),
            "model": model,
            "model_version": version,
            EVENT_TIMESTAMP: _stamp_column(len(ids), None),
            CREATED: _stamp_column(len(ids), None),
        }
    )


# -- statistics -----------------------------------------------------------------------------------


def _count_before(
    sorted_keys: np.ndarray, starts: np.ndarray, ts_sorted: np.ndarray, codes: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """For each query (codes[i], t[i]): interactions of that key with timestamp < t[i].

    `ts_sorted` is sorted by (key code, timestamp); `starts[c]` is where key c begins. One
    searchsorted over a composite (code, timestamp) value answers every query at once.
    """
    lo = int(ts_sorted.min()) if len(ts_sorted) else 0
    span = np.int64(int(ts_sorted.max()) - lo + 2) if len(ts_sorted) else np.int64(2)
    composite = sorted_keys.astype(np.int64) * span + (ts_sorted - lo)
    q = codes.astype(np.int64) * span + np.clip(t - lo, -1, span - 1)
    return np.searchsorted(composite, q, side="left") - starts[codes]


def stats_table(interactions: pd.DataFrame, key: str, window_days: int) -> pd.DataFrame:
    """Daily snapshots of one entity's activity, plus a current row per key (stamped later).

    Args:
        interactions: `key` and `timestamp` (unix seconds, int64) columns.
        key: `user_id` or `item_id`.
        window_days: length of the `interactions_window` count.

    Returns:
        key, interactions, interactions_window, days_since_first, days_since_last,
        event_timestamp (NaT on the current rows), created (NaT).
    """
    if key not in interactions.columns or TIMESTAMP not in interactions.columns:
        raise DataError(f"interactions need columns {key!r} and {TIMESTAMP!r}; got {list(interactions.columns)}")
    if not len(interactions):
        return empty(f"{key.split('_')[0]}_stats")
    keys = interactions[key].astype(str).to_numpy()
    ts = pd.to_numeric(interactions[TIMESTAMP]).to_numpy(np.int64)
    uniq, codes = np.unique(keys, return_inverse=True)
    order = np.lexsort((ts, codes))
    codes_s, ts_s = codes[order], ts[order]
    starts = np.searchsorted(codes_s, np.arange(len(uniq)), side="left")
    first = ts_s[starts]

    # snapshot rows: one per (key, active day), stamped at the end of that day
    day = ts_s // DAY
    snap = pd.DataFrame({"c": codes_s, "d": day}).drop_duplicates().to_numpy()
    s_codes, s_end = snap[:, 0], (snap[:, 1] + 1) * DAY
    # the current row of every key: as of the end of the data's last day
    end = (int(ts.max()) // DAY + 1) * DAY
    c_codes = np.arange(len(uniq))
    all_codes = np.concatenate([s_codes, c_codes])
    all_t = np.concatenate([s_end, np.full(len(uniq), end, np.int64)])

    n_before = _count_before(codes_s, starts, ts_s, all_codes, all_t)
    n_window = n_before - _count_before(codes_s, starts, ts_s, all_codes, all_t - window_days * DAY)
    last = ts_s[starts[all_codes] + n_before - 1]  # n_before >= 1 for every row by construction
    stamps = pd.to_datetime(s_end, unit="s", utc=True)
    out = pd.DataFrame(
        {
            key: uniq[all_codes],
            "interactions": n_before.astype(np.int64),
            "interactions_window": n_window.astype(np.int64),
            "days_since_first": ((all_t - first[all_codes]) / DAY).astype(np.float32),
            "days_since_last": ((all_t - last) / DAY).astype(np.float32),
            EVENT_TIMESTAMP: pd.DatetimeIndex(list(stamps) + [pd.NaT] * len(uniq), tz="UTC"),
        }
    )
    out[CREATED] = _stamp_column(len(out), None)
    return out


def data_end(interactions: pd.DataFrame) -> pd.Timestamp | None:
    """End of the data's last day (what the current statistics rows are as of)."""
    if not len(interactions):
        return None
    return pd.Timestamp((int(pd.to_numeric(interactions[TIMESTAMP]).max()) // DAY + 1) * DAY, unit="s", tz="UTC")


# -- recommendations -------------------------------------------------------------------------------


def recommendations_table(recs: pd.DataFrame, model: str, version: str) -> pd.DataFrame:
    """latest.parquet (user_id, item_id, rank, score; long) -> one row per user with lists, best first."""
    need = [USER_ID, ITEM_ID, "rank", "score"]
    missing = [c for c in need if c not in recs.columns]
    if missing:
        raise DataError(f"recommendations lack column(s) {missing}; expected {need} (mmrec recommend writes them)")
    if not len(recs):
        return empty("user_recommendations")
    recs = recs.sort_values([USER_ID, "rank"], kind="stable")
    grouped = recs.groupby(USER_ID, sort=True)
    out = pd.DataFrame(
        {
            USER_ID: list(grouped.groups.keys()),
            "item_ids": [list(map(str, g)) for g in grouped[ITEM_ID].agg(list)],
            "scores": [np.asarray(g, np.float32) for g in grouped["score"].agg(list)],
        }
    )
    out[USER_ID] = out[USER_ID].astype(str)
    out["model"], out["model_version"] = model, version
    out[EVENT_TIMESTAMP] = _stamp_column(len(out), None)
    out[CREATED] = _stamp_column(len(out), None)
    return out
