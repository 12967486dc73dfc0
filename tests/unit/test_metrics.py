"""Metrics against values worked out by hand.

    user A: ranked list hits [1, 0, 1, 0], 3 relevant items in total
    user B: ranked list hits [0, 0, 0, 1], 1 relevant item

At k=4:
    recall    A = 2/3                         B = 1/1
    precision A = 2/4                         B = 1/4
    ndcg      A = (1 + 1/log2 4) / (1 + 1/log2 3 + 1/log2 4) = 1.5 / 2.130930 = 0.703918
              B = (1/log2 5) / 1 = 0.430677
    map       A = (1/1 + 2/3) / min(3, 4) = 0.555556
              B = (1/4) / 1 = 0.25
At k=2: recall A = 1/3, ndcg A = 1 / (1 + 1/log2 3) = 0.613147, map A = 1 / min(3, 2) = 0.5; B all 0.
"""

import numpy as np
import pytest

from mmrec import metrics as M

HITS = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], dtype=bool)
NREL = np.array([3, 1])


def test_recall():
    np.testing.assert_allclose(M.recall_at_k(HITS, NREL, 4), [2 / 3, 1.0])
    np.testing.assert_allclose(M.recall_at_k(HITS, NREL, 2), [1 / 3, 0.0])


def test_precision():
    np.testing.assert_allclose(M.precision_at_k(HITS, NREL, 4), [0.5, 0.25])
    np.testing.assert_allclose(M.precision_at_k(HITS, NREL, 1), [1.0, 0.0])


def test_hit():
    np.testing.assert_allclose(M.hit_at_k(HITS, NREL, 4), [1.0, 1.0])
    np.testing.assert_allclose(M.hit_at_k(HITS, NREL, 3), [1.0, 0.0])


def test_ndcg():
    np.testing.assert_allclose(M.ndcg_at_k(HITS, NREL, 4), [0.703918, 0.430677], atol=1e-6)
    np.testing.assert_allclose(M.ndcg_at_k(HITS, NREL, 2), [0.613147, 0.0], atol=1e-6)


def test_ndcg_perfect_ranking_is_one():
    hits = np.array([[1, 1, 0, 0]], dtype=bool)
    np.testing.assert_allclose(M.ndcg_at_k(hits, np.array([2]), 4), [1.0])


def test_map():
    np.testing.assert_allclose(M.map_at_k(HITS, NREL, 4), [5 / 9, 0.25], atol=1e-9)
    np.testing.assert_allclose(M.map_at_k(HITS, NREL, 2), [0.5, 0.0])


def test_coverage():
    top = np.array([[0, 1, 2], [0, 3, 4]])
    assert M.coverage_at_k(top, 10, 1) == pytest.approx(0.1)
    assert M.coverage_at_k(top, 10, 3) == pytest.approx(0.5)


def test_compute_all_keys_and_means():
    res = M.compute_all(HITS, NREL, (2, 4), top_items=np.array([[0, 1, 2, 3], [4, 5, 6, 7]]), n_items=16)
    assert res["recall@4"] == pytest.approx((2 / 3 + 1) / 2)
    assert res["coverage@2"] == pytest.approx(4 / 16)
    assert set(res) == {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "map", "hit", "coverage") for k in (2, 4)}


@pytest.mark.parametrize(
    ("hits", "nrel", "k", "msg"),
    [
        (np.zeros(4, bool), np.array([1]), 2, "2-D"),
        (HITS, np.array([1, 1, 1]), 2, "shape"),
        (HITS, NREL, 5, "k must be"),
        (HITS, np.array([0, 1]), 2, "at least one relevant"),
    ],
)
def test_bad_input(hits, nrel, k, msg):
    with pytest.raises(ValueError, match=msg):
        M.recall_at_k(hits, nrel, k)


def test_per_user_metrics_keeps_users_apart():
    res = M.per_user_metrics(HITS, NREL, (2, 4))
    np.testing.assert_allclose(res["recall@4"], [2 / 3, 1.0])
    np.testing.assert_allclose(res["ndcg@2"], [0.613147, 0.0], atol=1e-6)
    assert set(res) == {f"{m}@{k}" for m in M.METRICS for k in (2, 4)}


def test_expected_random_by_hand():
    """4 candidates, k=2. r=1: recall 2/4, precision 1/4, hit 1 - C(3,2)/C(4,2) = 1/2,
    ndcg (1/4)(1 + 1/log2 3) = 0.407732, map (1/4)/1 + (1/4)/2 = 0.375.
    r=2: recall 1/2, precision 1/2, hit 1 - 1/6, ndcg 1/2, map (1/2 + (1/2 + 1/6)/2) / 2 = 5/12."""
    exp = M.expected_random_at_k(np.array([1, 2]), 4, 2)
    np.testing.assert_allclose(exp["recall"], [0.5, 0.5])
    np.testing.assert_allclose(exp["precision"], [0.25, 0.5])
    np.testing.assert_allclose(exp["hit"], [0.5, 5 / 6])
    np.testing.assert_allclose(exp["ndcg"], [0.407732, 0.5], atol=1e-6)
    np.testing.assert_allclose(exp["map"], [0.375, 5 / 12])
    # k beyond the candidates: everything is ranked, recall is 1
    np.testing.assert_allclose(M.expected_random_at_k(np.array([1]), 3, 10)["recall"], [1.0])
    with pytest.raises(ValueError, match="n_relevant"):
        M.expected_random_at_k(np.array([5]), 4, 2)
