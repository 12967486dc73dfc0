"""benchmarks/peers_common.py, shared by the peer scripts (peers_cornac.py, peers_mmrec.py), without
any peer toolkit: the id mapping between a peer's index and ours, the masking and candidates each
slice is scored with, the validation-only choice, the grid syntax and the results table."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from mmrec.config import Params
from mmrec.data.interactions import split_data_from_frames
from mmrec.evaluate import user_metrics

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@contextlib.contextmanager
def loaded_script(file: str, name: str) -> Iterator[ModuleType]:
    """benchmarks/`file` (the scripts are no package) as module `name`, registered in sys.modules
    while in use (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def common():
    with loaded_script("peers_common.py", "peers_common_under_test") as module:
        yield module


def test_positions_map_our_ids_onto_the_peers_index_and_mark_unknown_ones(common):
    theirs = {"b": 0, "c": 1, "a": 2}  # the peer's own order (Cornac: first seen in train first)
    assert common.positions(["a", "b", "c", "z"], theirs).tolist() == [2, 0, 1, -1]
    assert common.positions(np.array([7, 8], dtype=object), {"8": 0}).tolist() == [-1, 0]  # ids compared as str


def test_to_our_items_reorders_and_gives_unscored_items_the_row_minimum(common):
    # peer scores over its index [b, c, a]; our index is [a, b, c, z, w]: z unknown (-1), w known
    # to the map but beyond the scored width (Cornac scoring only its training items)
    scores = np.array([[0.5, 0.9, 0.1], [3.0, 1.0, 2.0]])
    item_pos = np.array([2, 0, 1, -1, 3])
    out = common.to_our_items(scores, item_pos)
    assert out.tolist() == [[0.1, 0.5, 0.9, 0.1, 0.1], [2.0, 3.0, 1.0, 1.0, 1.0]]


def test_peer_score_fn_ranks_in_our_index_with_our_masks(common):
    # our index: users [u0, u1], items [i0..i3]; the peer knows users in order [u1, u0] and items
    # in order [i3, i2, i1, i0]; it scores its item j as (j + 1) * (user + 1): the best item in
    # its index is its last one, i0 in ours
    user_pos = common.positions(["u0", "u1"], {"u1": 0, "u0": 1})
    item_pos = common.positions(["i0", "i1", "i2", "i3"], {"i3": 0, "i2": 1, "i1": 2, "i0": 3})

    def score_user(p: int) -> np.ndarray:
        return np.arange(1, 5, dtype=float) * (p + 1)

    fn = common.peer_score_fn(score_user, user_pos, item_pos)
    assert fn(np.array([0])).tolist() == [[8.0, 6.0, 4.0, 2.0]]  # u0 is the peer's user 1
    import scipy.sparse as sp

    target = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32))
    exclude = sp.csr_matrix(np.array([[0, 0, 0, 0], [1, 1, 0, 0]], dtype=np.float32))  # u1 saw i0, i1
    um = user_metrics(fn, target, exclude, (1, 2))
    assert um.top[:, :2].tolist() == [[0, 1], [2, 3]]  # u1: i0, i1 masked, so i2 then i3
    assert um.values["recall@1"].tolist() == [0.5, 1.0]


def test_an_unknown_user_gets_all_items_tied(common):
    fn = common.peer_score_fn(lambda p: np.ones(3), np.array([-1, 0]), np.array([0, 1, 2]))
    out = fn(np.array([0, 1]))
    assert np.ptp(out[0]) == 0 and out[1].tolist() == [1.0, 1.0, 1.0]


def _frames() -> dict[str, pd.DataFrame]:
    def df(rows: list[tuple[str, str]]) -> pd.DataFrame:
        return pd.DataFrame(
            {"user_id": [u for u, _ in rows], "item_id": [i for _, i in rows], "timestamp": range(len(rows))}
        )

    return {
        "train": df([("u0", "w0"), ("u0", "w1"), ("u1", "w2"), ("u1", "w3")]),
        "valid": df([("u0", "w2"), ("u1", "w0")]),
        "test": df([("u0", "w3"), ("u1", "w1")]),
        "cold_valid": df([("u0", "c0"), ("u1", "c1")]),
        "cold_test": df([("u0", "c2"), ("u1", "c3")]),
    }


def test_slices_mask_and_restrict_each_part_as_mmrec_evaluate_does(common):
    f = _frames()
    data = split_data_from_frames(
        f["train"], f["valid"], f["test"], f["cold_test"], cold_valid=f["cold_valid"]
    )  # items sorted: c0 c1 c2 c3 w0 w1 w2 w3
    ev = Params().evaluate.model_copy(update={"cold_permutations": 50})
    slices = common.Slices(data, ev)
    assert set(slices.parts) == {"valid", "test", "cold_valid", "cold_test"}
    items = list(data.item_ids)
    prefer = ["c0", "c1", "c2", "c3", "w2", "w0", "w3", "w1"]  # one global order, best first
    scores = np.array([len(prefer) - prefer.index(i) for i in items], dtype=float)

    def fn(users: np.ndarray) -> np.ndarray:
        return np.tile(scores, (len(users), 1))

    out = slices.score(fn, ["valid", "test", "cold_valid", "cold_test"])
    # warm parts rank every item, cold ones included: the four c* items come first, so each
    # user's valid item is found (Recall@10 1) but below them (NDCG@10 < 1/log2(5) + 1e-9)
    assert out["valid"]["recall@10"] == 1.0 and out["valid"]["ndcg@10"] <= 1 / np.log2(6) + 1e-9
    # test: u0's train (w0, w1) + valid (w2) are masked, so w3 is u0's first warm item
    test_um = user_metrics(fn, data.test, slices.parts["test"][1], (10,))
    u0_top = [items[j] for j in test_um.top[0] if j >= 0]
    assert "w2" not in u0_top and "w0" not in u0_top and u0_top.index("w3") == 4  # after c0..c3
    # cold parts: only their own two items are candidates, so Recall@10 is 1 and the random
    # expectation is 10/2 capped at the 2 candidates: 1.0
    assert out["cold_valid"]["recall@10"] == 1.0 and out["cold_test"]["recall@10"] == 1.0
    assert out["cold_test"]["random_expected"]["recall@10"] == 1.0
    assert out["cold_test"]["random_lift"]["recall@10"] == pytest.approx(1.0)
    cold_um = user_metrics(fn, data.cold_test, slices.parts["cold_test"][1], (10,), candidates=data.cold_items)
    assert {items[j] for j in cold_um.top.ravel() if j >= 0} <= {"c2", "c3"}
    assert "p_value" in out["cold_test"] and out["cold_test"]["tied_users"] == 0.0


def test_choose_reads_only_the_validation_block_and_keeps_the_earlier_of_a_tie(common):
    trials = [
        {"selection": {"recall@20": 0.20}, "test": {"recall@20": 0.99}},
        {"selection": {"recall@20": 0.25}, "test": {"recall@20": 0.10}},
        {"selection": {"recall@20": 0.25}, "test": {"recall@20": 0.50}},
        {"selection": {"recall@20": float("nan")}},
    ]
    assert common.choose(trials) == 1
    with pytest.raises(ValueError, match="validation"):
        common.choose([{"test": {"recall@20": 1.0}}])


def test_grid_syntax(common):
    assert common.parse_values("k=64, max_iter=200,lr=0.05,bias=true,features=raw") == {
        "k": 64,
        "max_iter": 200,
        "lr": 0.05,
        "bias": True,
        "features": "raw",
    }
    grid = common.parse_grid("learning_rate=0.002,0.01;k2=10,50")
    assert grid == {"learning_rate": [0.002, 0.01], "k2": [10, 50]}
    assert common.grid_settings(grid) == [
        {"learning_rate": 0.002, "k2": 10},
        {"learning_rate": 0.002, "k2": 50},
        {"learning_rate": 0.01, "k2": 10},
        {"learning_rate": 0.01, "k2": 50},
    ]
    for bad in ("k2", "k2=", "=1,2", "k=1;k=2"):
        with pytest.raises(ValueError):
            common.parse_grid(bad)
    with pytest.raises(ValueError, match="key=value"):
        common.parse_values("k")


def test_table_row_shows_lift_and_p_of_the_cold_test_and_dashes_for_what_is_missing(common):
    entry = {
        "select": "cold_valid",
        "valid": {"recall@20": 0.2, "ndcg@20": 0.1},
        "cold_valid": {"recall@20": 0.7, "random_lift": {"recall@20": 2.5}},
        "cold_test": {
            "recall@20": 0.5,
            "ndcg@20": 0.25,
            "random_lift": {"recall@20": 2.1},
            "p_value": {"recall@20": 0.004},
        },
    }
    row = common.table_row("mmrec freedom", entry)
    assert row == (
        "| mmrec freedom | cold_valid | 0.2000 | 0.1000 | - | - | 0.7000 (2.50x) | 0.5000 | 2.10x | 0.004 | 0.2500 |"
    )
    assert row.count("|") == common.TABLE_HEAD[0].count("|")
