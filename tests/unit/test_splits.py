"""Splits: RecBole's per-user ratio rule, kinds, the cold slice, export and hash."""

import numpy as np
import pandas as pd
import pytest

from mmrec.config import SplitParams
from mmrec.data.splits import load_split, ratio_counts, split_hash, split_interactions, write_split
from mmrec.errors import DataError, StageError
from mmrec.paths import DatasetPaths

R = (0.8, 0.1, 0.1)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, (1, 0, 0)),
        (2, (1, 0, 1)),
        (3, (1, 1, 1)),
        (9, (7, 1, 1)),
        (10, (8, 1, 1)),
        (19, (17, 1, 1)),
        (20, (16, 2, 2)),
        (25, (21, 2, 2)),
    ],
)
def test_ratio_counts_match_recbole(n, expected):
    assert ratio_counts(n, R) == expected


def log(rows):
    """rows: (user, item, unix seconds); source_row = position."""
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    df["timestamp"] = pd.to_datetime(df.pop("ts"), unit="s", utc=True)
    df["source_row"] = np.arange(1, len(df) + 1)
    return df


#            user  item  time
ROWS = [("a", f"i{j}", 100 + j) for j in range(10)] + [("b", f"i{j}", 200 - j) for j in range(10)]


def test_temporal_per_user_newest_go_to_test():
    fr = split_interactions(log(ROWS), SplitParams(cold_item_fraction=0))
    a_test = fr.test[fr.test.user_id == "a"].item_id.tolist()
    b_test = fr.test[fr.test.user_id == "b"].item_id.tolist()
    assert a_test == ["i9"] and b_test == ["i0"]  # b's timestamps run backwards
    assert fr.valid[fr.valid.user_id == "a"].item_id.tolist() == ["i8"]
    assert len(fr.train) == 16 and fr.cold_test.empty


def test_temporal_ties_keep_file_order():
    rows = [("a", f"i{j}", 100) for j in range(10)]
    fr = split_interactions(log(rows), SplitParams(cold_item_fraction=0))
    assert fr.test.item_id.tolist() == ["i9"] and fr.valid.item_id.tolist() == ["i8"]


def test_random_is_seeded_and_keeps_counts():
    p = SplitParams(kind="random", cold_item_fraction=0, seed=1)
    a, b = split_interactions(log(ROWS), p), split_interactions(log(ROWS), p)
    c = split_interactions(log(ROWS), SplitParams(kind="random", cold_item_fraction=0, seed=2))
    assert split_hash(a) == split_hash(b) != split_hash(c)
    assert (len(a.train), len(a.valid), len(a.test)) == (16, 2, 2)


def test_global_time_cut():
    fr = split_interactions(log(ROWS), SplitParams(kind="global_time", cold_item_fraction=0))
    assert fr.train.timestamp.max() <= fr.valid.timestamp.min() <= fr.test.timestamp.min()
    assert (len(fr.train), len(fr.valid), len(fr.test)) == (16, 2, 2)


def test_cold_items_held_out_entirely():
    # items i0..i9 first appear at: a gives i_j at 100+j, b gives i_j at 200-j -> first time 100+j
    fr = split_interactions(log(ROWS), SplitParams(cold_item_fraction=0.2))
    assert set(fr.cold_test.item_id) == {"i8", "i9"}
    warm = pd.concat([fr.train, fr.valid, fr.test])
    assert not set(warm.item_id) & {"i8", "i9"}
    assert len(fr.cold_test) == 4


def test_min_user_interactions_keeps_short_users_in_train():
    rows = ROWS + [("c", "i1", 300), ("c", "i2", 301)]
    fr = split_interactions(log(rows), SplitParams(cold_item_fraction=0, min_user_interactions=3))
    assert "c" not in set(fr.test.user_id) and (fr.train.user_id == "c").sum() == 2


def test_null_timestamps_refused():
    df = log(ROWS)
    df.loc[0, "timestamp"] = pd.NaT
    with pytest.raises(DataError, match="validate"):
        split_interactions(df, SplitParams())


def test_export_roundtrip_and_hash(tmp_path):
    p = SplitParams(cold_item_fraction=0.2)
    fr = split_interactions(log(ROWS), p)
    paths = DatasetPaths("t", tmp_path)
    digest = write_split(fr, paths, "temporal", p)
    head = (paths.split_file("temporal", "train")).read_text().splitlines()[:2]
    assert head == ["user_id\titem_id\ttimestamp", "a\ti0\t100"]
    data = load_split(paths, "temporal", items=pd.Series([f"i{j}" for j in range(12)]))
    assert data.split_hash == digest and data.train.n_items == 12
    assert data.train.nnz == len(fr.train) and data.test.nnz == len(fr.test)
    assert data.train.item_ids[data.cold_items].tolist() == ["i8", "i9"]
    assert data.train.matrix[:, data.cold_items].nnz == 0


def test_missing_split_is_stage_error(tmp_path):
    with pytest.raises(StageError, match="mmrec stage split"):
        load_split(DatasetPaths("t", tmp_path), "temporal")
