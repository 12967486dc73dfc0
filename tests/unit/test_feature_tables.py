"""Feature tables for Feast (mmrec.feast.tables): statistics snapshots, fused vectors, top-K lists.

No Feast here: these are the pure table builders, checked against values worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmrec.errors import DataError
from mmrec.feast import tables as ft

DAY = 86_400
T0 = 1_600_041_600  # 2020-09-14 00:00:00 UTC, a midnight


def _inter(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


# item a: day 0 at +1h and +2h, day 3 at +5h; item b: day 1 at +0s
INTER = _inter(
    [
        ("u1", "a", T0 + 3600),
        ("u2", "a", T0 + 7200),
        ("u1", "b", T0 + DAY),
        ("u3", "a", T0 + 3 * DAY + 5 * 3600),
    ]
)


def test_item_stats_snapshots_by_hand():
    df = ft.stats_table(INTER, "item_id", window_days=2)
    snap = df[df.event_timestamp.notna()].sort_values(["item_id", "event_timestamp"]).reset_index(drop=True)
    # one row per (item, active day), stamped at the end of that day
    assert list(zip(snap.item_id, snap.event_timestamp, strict=True)) == [
        ("a", pd.Timestamp(T0 + DAY, unit="s", tz="UTC")),
        ("a", pd.Timestamp(T0 + 4 * DAY, unit="s", tz="UTC")),
        ("b", pd.Timestamp(T0 + 2 * DAY, unit="s", tz="UTC")),
    ]
    assert snap.interactions.tolist() == [2, 3, 1]
    # window of 2 days before the stamp: a@day1 -> both, a@day4 -> only the day-3 one, b -> 1
    assert snap.interactions_window.tolist() == [2, 1, 1]
    assert snap.days_since_first.round(4).tolist() == pytest.approx(
        [(DAY - 3600) / DAY, (4 * DAY - 3600) / DAY, 1.0], abs=1e-4
    )
    assert snap.days_since_last.round(4).tolist() == pytest.approx(
        [(DAY - 7200) / DAY, (DAY - 5 * 3600) / DAY, 1.0], abs=1e-4
    )


def test_current_rows_are_as_of_the_data_end_and_unstamped():
    df = ft.stats_table(INTER, "item_id", window_days=30)
    cur = df[df.event_timestamp.isna()].set_index("item_id")
    assert sorted(cur.index) == ["a", "b"] and cur.loc["a", "interactions"] == 3 and cur.loc["b", "interactions"] == 1
    end = ft.data_end(INTER)
    assert end == pd.Timestamp(T0 + 4 * DAY, unit="s", tz="UTC")
    # recency of b as of the end of the data's last day: 3 days
    assert cur.loc["b", "days_since_last"] == pytest.approx(3.0)


def test_snapshot_values_only_count_interactions_before_the_stamp():
    """The property point-in-time joins rely on, on random data with ties."""
    rng = np.random.default_rng(0)
    ts = T0 + rng.integers(0, 20 * DAY, 400)
    ts[7::7] = ts[6:-1:7][: len(ts[7::7])]  # shared timestamps
    inter = _inter(
        [
            (f"u{u}", f"i{i}", int(t))
            for u, i, t in zip(rng.integers(0, 9, 400), rng.integers(0, 6, 400), ts, strict=True)
        ]
    )
    df = ft.stats_table(inter, "item_id", window_days=5)
    snap = df[df.event_timestamp.notna()]
    for row in snap.itertuples():
        s = int(row.event_timestamp.timestamp())
        mine = inter[inter.item_id == row.item_id].timestamp
        assert row.interactions == int((mine < s).sum())
        assert row.interactions_window == int(((mine < s) & (mine >= s - 5 * DAY)).sum())
        assert row.days_since_last == pytest.approx((s - mine[mine < s].max()) / DAY, abs=1e-3)


def test_stats_need_their_columns():
    with pytest.raises(DataError, match="timestamp"):
        ft.stats_table(pd.DataFrame({"item_id": ["a"]}), "item_id", 30)
    assert ft.stats_table(INTER.iloc[:0], "user_id", 30).empty


def test_fused_vectors_average_modality_cosines():
    text = (["a", "b", "c"], np.array([[1, 0], [0, 1], [1, 1]], np.float32))
    image = (["a", "b"], np.array([[0, 0, 2], [0, 0, 3]], np.float32))
    df = ft.fused_table({"text": text, "image": image}).set_index("item_id")
    vec = {i: np.asarray(v) for i, v in df.embedding.items()}
    assert all(np.linalg.norm(v) == pytest.approx(1.0) for v in vec.values())
    # a, b: text cosine 0, image cosine 1 -> mean 0.5
    assert float(vec["a"] @ vec["b"]) == pytest.approx(0.5)
    assert list(df.loc["c", "modalities"]) == ["text"] and list(df.loc["a", "modalities"]) == ["text", "image"]
    assert ft.fused_table({}).empty


def test_embedding_table_rejects_bad_vectors():
    with pytest.raises(DataError, match="non-finite"):
        ft.embedding_table(["a"], np.array([[np.nan, 1.0]]), "enc")
    with pytest.raises(DataError, match="shape"):
        ft.embedding_table(["a", "b"], np.zeros((1, 2)), "enc")


def test_recommendations_become_ordered_lists():
    recs = pd.DataFrame(
        {
            "user_id": ["u2", "u1", "u1", "u2"],
            "item_id": ["x", "b", "a", "y"],
            "rank": [2, 2, 1, 1],
            "score": [0.1, 0.5, 0.9, 0.7],
        }
    )
    df = ft.recommendations_table(recs, "bpr", "3").set_index("user_id")
    assert list(df.loc["u1", "item_ids"]) == ["a", "b"] and list(df.loc["u2", "item_ids"]) == ["y", "x"]
    assert np.allclose(df.loc["u1", "scores"], [0.9, 0.5]) and df.loc["u1", "model_version"] == "3"
    with pytest.raises(DataError, match="rank"):
        ft.recommendations_table(recs.drop(columns="rank"), "bpr", "3")


def test_every_table_has_a_typed_schema():
    for table in ft.TABLES:
        schema = ft.arrow_schema(table)
        assert schema.names[-2:] == [ft.EVENT_TIMESTAMP, ft.CREATED]
        assert ft.empty(table).columns.tolist() == schema.names
