"""Full-ranking protocol: masking, candidates, top-k order and batching."""

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.evaluate import evaluate_scores, rank_users

# 2 users x 5 items; user 0 saw item 0 in training, user 1 saw item 4.
SCORES = np.array([[0.9, 0.8, 0.1, 0.5, 0.2], [0.1, 0.2, 0.3, 0.4, 0.95]], dtype=np.float32)
TRAIN = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=np.float32))
TARGET = sp.csr_matrix(np.array([[0, 0, 0, 1, 0], [0, 0, 1, 0, 0]], dtype=np.float32))


def score_fn(users):
    return SCORES[users]


def test_rank_order_and_ties():
    s = np.array([[0.5, 0.9, 0.5, 0.1]], dtype=np.float32)
    assert rank_users(lambda u: s[u], np.array([0]), 3).tolist() == [[1, 0, 2]]  # tie 0.5: lower index first
    assert rank_users(lambda u: s[u], np.array([0]), 6).tolist() == [[1, 0, 2, 3, -1, -1]]


def test_rank_masks_training_items():
    top = rank_users(score_fn, np.array([0, 1]), 2, exclude=TRAIN)
    assert top.tolist() == [[1, 3], [3, 2]]


def test_rank_candidates_only():
    top = rank_users(score_fn, np.array([0]), 2, candidates=np.array([2, 4]))
    assert top.tolist() == [[4, 2]]


def test_evaluate_by_hand():
    # user 0 ranking after mask: [1, 3, 4, 2] -> target 3 at rank 2; user 1: [3, 2, 1, 0] -> target 2 at rank 2
    res = evaluate_scores(score_fn, TARGET, TRAIN, ks=(1, 2))
    assert res["recall@1"] == 0.0
    assert res["recall@2"] == 1.0
    assert res["ndcg@2"] == pytest.approx(1 / np.log2(3))
    assert res["users"] == 2


def test_without_mask_seen_item_takes_a_slot():
    res = evaluate_scores(score_fn, TARGET, None, ks=(2,))
    assert res["recall@2"] == 0.0  # user 0: [0, 1]; user 1: [4, 3]


def test_users_without_target_are_skipped_and_batching_is_invisible():
    target = sp.csr_matrix(np.array([[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    a = evaluate_scores(score_fn, target, TRAIN, ks=(2,), batch_size=1)
    b = evaluate_scores(score_fn, target, TRAIN, ks=(2,), batch_size=100)
    assert a == b and a["users"] == 1


def test_lists_shorter_than_k_are_padded_not_filled_with_masked_items():
    # 5 items, user 0 has 1 masked -> only 4 rankable; k=10 still works and coverage counts real items only
    res = evaluate_scores(score_fn, TARGET, TRAIN, ks=(2, 10))
    assert res["recall@10"] == 1.0 and res["precision@10"] == pytest.approx(0.1)
    top = rank_users(score_fn, np.array([0]), 10, exclude=TRAIN)
    assert top[0, :4].tolist() == [1, 3, 4, 2] and (top[0, 4:] == -1).all()
    assert res["coverage@10"] == pytest.approx(5 / 5)
    cand = evaluate_scores(score_fn, TARGET, TRAIN, ks=(10,), candidates=np.array([2, 3]))
    assert cand["coverage@10"] == 1.0 and cand["recall@10"] == 1.0
