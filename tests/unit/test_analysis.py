"""Evaluation analyses on tiny data: bootstrap CIs, slices, random references, personalisation."""

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec import analysis as A
from mmrec.errors import ConfigError
from mmrec.evaluate import user_metrics

# --- paired bootstrap ---------------------------------------------------------------------------


def test_bootstrap_ci_contains_point_estimate_and_is_reproducible():
    rng = np.random.default_rng(1)
    ref = rng.random(300)
    model = ref * 1.2 + rng.normal(0, 0.05, 300)  # a clear, consistent 20% gain
    a = A.bootstrap_ratio(model, ref, n_resamples=400, seed=7)
    b = A.bootstrap_ratio(model, ref, n_resamples=400, seed=7)
    assert a == b
    assert a["ratio"] == pytest.approx(model.mean() / ref.mean())
    assert a["low"] < a["ratio"] < a["high"]
    assert a["low"] > 1.1 and a["high"] < 1.3  # paired: tight around 1.2 despite the spread of users
    c = A.bootstrap_ratio(model, ref, n_resamples=400, seed=8)
    assert (c["low"], c["high"]) != (a["low"], a["high"])  # the seed matters


def test_bootstrap_identical_models_give_exactly_one():
    x = np.array([0.0, 0.5, 1.0, 0.25])
    r = A.bootstrap_ratio(x, x, n_resamples=50, seed=0)
    assert r["ratio"] == r["low"] == r["high"] == 1.0
    assert r["users"] == 4 and r["resamples"] == 50


def test_bootstrap_zero_reference_and_bad_input():
    assert A.bootstrap_ratio(np.ones(3), np.zeros(3))["ratio"] is None
    with pytest.raises(ValueError, match="aligned"):
        A.bootstrap_ratio(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="confidence"):
        A.bootstrap_ratio(np.ones(3), np.ones(3), confidence=1.5)


# --- sparse slice -------------------------------------------------------------------------------


def test_sparse_user_mask_counts_training_interactions_only():
    # training counts per user: 3, 1, 0, 2
    train = sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]], dtype=np.float32))
    users = np.array([0, 1, 3])
    assert A.sparse_user_mask(train, users, 2).tolist() == [False, True, True]
    assert A.sparse_user_mask(train, users, 0).tolist() == [False, False, False]
    assert A.sparse_user_mask(train, np.array([2]), 0).tolist() == [True]
    with pytest.raises(ConfigError, match="sparse_max_train"):
        A.sparse_user_mask(train, users, -1)


def test_sparse_subset_of_user_metrics_is_the_mean_over_those_users():
    scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5], [0.5, 0.1, 0.9]], dtype=np.float32)
    target = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32))
    um = user_metrics(lambda u: scores[u], target, None, ks=(1,))
    assert um.values["recall@1"].tolist() == [1.0, 0.0, 1.0]
    sub = um.subset(np.array([False, True, True]))
    assert sub.summary((1,))["recall@1"] == 0.5 and sub.summary((1,))["users"] == 2
    assert sub.summary((1,))["coverage@1"] == pytest.approx(2 / 3)  # items 1 and 2 shown


# --- random references ---------------------------------------------------------------------------


def test_expected_random_recall_is_k_over_candidates_and_seeded_scorer_agrees():
    n_users, n_items = 400, 50
    rng = np.random.default_rng(0)
    target = sp.csr_matrix((rng.random((n_users, n_items)) < 0.1).astype(np.float32))
    cand = np.arange(10, 50)  # 40 candidates
    um = user_metrics(A.random_score_fn(n_items, seed=3), target, None, ks=(5, 10), candidates=cand)
    exp = A.expected_random(um, (5, 10))
    assert exp["recall@5"] == pytest.approx(5 / 40) and exp["recall@10"] == pytest.approx(10 / 40)
    assert exp["candidates"] == 40 and exp["users"] == len(um.users)
    measured = um.summary((5, 10))
    assert measured["recall@10"] == pytest.approx(exp["recall@10"], abs=0.03)
    assert measured["ndcg@10"] == pytest.approx(exp["ndcg@10"], abs=0.03)


def test_random_scorer_does_not_depend_on_batching():
    fn = A.random_score_fn(7, seed=1)
    np.testing.assert_array_equal(fn(np.array([0, 1, 2])), np.concatenate([fn(np.array([0, 1])), fn(np.array([2]))]))


def test_lift():
    assert A.lift({"recall@20": 0.3}, {"recall@20": 0.1}, ["recall@20"]) == {"recall@20": pytest.approx(3.0)}
    assert A.lift({"recall@20": 0.3}, {"recall@20": 0.0}, ["recall@20"]) == {"recall@20": None}


# --- personalisation -----------------------------------------------------------------------------


def test_personalisation_is_one_for_identical_rankings():
    item_scores = np.random.default_rng(0).random(30)
    same = lambda users: np.tile(item_scores, (len(users), 1)) * (1 + np.asarray(users)[:, None])  # same order
    res = A.rank_personalisation(same, np.arange(20), np.arange(5, 30), pairs=50, seed=0)
    assert res["mean_spearman"] == pytest.approx(1.0)
    assert res["pairs"] == 50 and res["users"] == 20 and res["constant_share"] == 0.0


def test_personalisation_flags_constant_scores():
    flat = lambda users: np.zeros((len(users), 12))  # e.g. popularity on cold items: all zero
    res = A.rank_personalisation(flat, np.arange(10), np.arange(12), pairs=20, seed=0)
    assert res["mean_spearman"] == 1.0 and res["constant_share"] == 1.0


def test_personalisation_is_near_zero_for_independent_random_rankings():
    res = A.rank_personalisation(A.random_score_fn(200, seed=5), np.arange(100), np.arange(200), pairs=300, seed=1)
    assert abs(res["mean_spearman"]) < 0.03


def test_personalisation_is_minus_one_for_reversed_rankings_and_needs_two_users():
    base = np.arange(10, dtype=np.float64)
    fn = lambda users: np.stack([base if u % 2 == 0 else -base for u in users])
    res = A.rank_personalisation(fn, np.array([0, 1]), np.arange(10), pairs=10, seed=0)
    assert res["mean_spearman"] == pytest.approx(-1.0)  # the only pair is (0, 1): never a user with themself
    assert A.rank_personalisation(fn, np.array([0]), np.arange(10))["mean_spearman"] is None


# --- learning curves and timings -----------------------------------------------------------------

HISTORY = [
    {"epoch": 1, "loss": 0.7, "seconds": 2.0},
    {"epoch": 2, "loss": 0.5, "seconds": 4.0, "valid_recall@20": 0.1, "eval_seconds": 1.0},
    {"epoch": 3, "loss": 0.4, "seconds": 3.0},
]


def test_learning_curve_and_seconds_per_epoch():
    assert A.learning_curve(HISTORY) == [(2, 0.1)]
    assert A.seconds_per_epoch(HISTORY, 99.0, 3) == pytest.approx(3.0)  # training time only
    assert A.seconds_per_epoch([], 6.0, 1) == 6.0  # closed-form: the whole fit is one epoch


def test_compare_to_reference_is_paired_and_reports_each_model():
    target = sp.csr_matrix(np.eye(4, dtype=np.float32))
    good = user_metrics(lambda u: np.eye(4, dtype=np.float32)[u], target, None, ks=(1,))
    bad = user_metrics(lambda u: np.roll(np.eye(4, dtype=np.float32), 1, axis=1)[u], target, None, ks=(1,))
    out = A.compare_to_reference({"ref": bad, "good": good}, "good", ["recall@1"], n_resamples=20, seed=0)
    assert out["models"]["ref"]["recall@1"]["ratio"] == 0.0
    assert "skipped" in A.compare_to_reference({"good": good}, "lightgcn")
