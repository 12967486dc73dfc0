"""ItemKNN against similarities worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.models.itemknn import ItemKNN, item_similarity, keep_top_k

#            i0 i1 i2 i3
X = np.array([[1, 1, 0, 0],   # u0
              [1, 1, 1, 0],   # u1
              [0, 1, 1, 0],   # u2
              [0, 0, 0, 1]],  # u3
             dtype=np.float32)  # fmt: skip
# item counts n = [2, 3, 2, 1]; co-occurrence c01 = 2, c02 = 1, c12 = 2, nothing with i3
R6 = np.sqrt(6.0)


def interactions() -> Interactions:
    users = np.array(["u0", "u1", "u2", "u3"], object)
    return Interactions(sp.csr_matrix(X), users, np.array(["a", "b", "c", "d"], object))


def test_cooccurrence_counts():
    s = item_similarity(sp.csr_matrix(X), "cooccurrence").toarray()
    expected = np.array([[0, 2, 1, 0], [2, 0, 2, 0], [1, 2, 0, 0], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(s, expected)


def test_cosine_by_hand():
    s = item_similarity(sp.csr_matrix(X), "cosine").toarray()
    # c_ij / sqrt(n_i n_j): s01 = 2/sqrt(2*3), s02 = 1/sqrt(2*2), s12 = 2/sqrt(3*2)
    expected = np.array([[0, 2 / R6, 0.5, 0], [2 / R6, 0, 2 / R6, 0], [0.5, 2 / R6, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(s, expected, rtol=1e-6)


def test_shrinkage_downweights_rare_pairs():
    s = item_similarity(sp.csr_matrix(X), "cosine", shrink=1.0).toarray()
    # multiplied by c / (c + 1): pair (0, 1) by 2/3, pair (0, 2) by 1/2
    assert s[0, 1] == pytest.approx(2 / R6 * 2 / 3, rel=1e-6)
    assert s[0, 2] == pytest.approx(0.5 * 0.5, rel=1e-6)


def test_top_k_keeps_each_targets_nearest():
    w = keep_top_k(item_similarity(sp.csr_matrix(X), "cosine"), k=1).toarray()
    # column i holds item i's single nearest neighbour; i1's tie (i0, i2) goes to the lower index
    expected = np.zeros((4, 4))
    expected[1, 0] = 2 / R6
    expected[0, 1] = 2 / R6
    expected[1, 2] = 2 / R6
    np.testing.assert_allclose(w, expected, rtol=1e-6)


def test_scores_are_history_times_sparse_similarity():
    model = ItemKNN(k=1).fit(interactions())
    scores = model.score(np.array([2]))[0]  # u2 saw i1, i2
    # score(i0) = W[1,0] + W[2,0] = 2/sqrt6; score(i1) = 0 (its kept neighbour i0 is unseen); score(i2) = W[1,2]
    np.testing.assert_allclose(scores, [2 / R6, 0.0, 2 / R6, 0.0], rtol=1e-6)
    assert model.weights is not None and model.weights.nnz == 3


def test_full_neighbourhood_cooccurrence_scores():
    model = ItemKNN(k=10, similarity="cooccurrence").fit(interactions())
    # u0 saw i0, i1: score(i2) = c02 + c12 = 3, score(i3) = 0
    np.testing.assert_allclose(model.score(np.array([0]))[0], [2, 2, 3, 0])
    assert model.recommend(np.array([0]), k=1)[0].tolist() == [[2]]


@pytest.mark.parametrize("similarity", ["cooccurrence", "cosine"])  # co-occurrence counts tie often at the cut
@pytest.mark.parametrize(("density", "k"), [(0.3, 4), (0.1, 6)])
def test_sparse_top_k_keeps_each_columns_k_largest_with_ties_to_lower_items(similarity, density, k):
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((40, 30)) < density).astype(np.float32))
    sim = item_similarity(x, similarity)
    dense = sim.toarray()
    positives = (dense > 0).sum(axis=0)
    if density < 0.3:  # columns that keep every entry and columns that are cut, side by side
        assert (positives <= k).any() and (positives > k).any()
    whole = keep_top_k(sim, k=k)
    per_column = np.diff(sp.csc_matrix(whole).indptr)
    np.testing.assert_array_equal(per_column, np.minimum(positives, k))
    # each kept column holds its k largest values, ties taken from the lowest item indices
    for i in range(30):
        order = np.argsort(-dense[:, i], kind="stable")[:k]
        order = order[dense[order, i] > 0]
        assert sorted(sp.csc_matrix(whole)[:, i].indices.tolist()) == sorted(order.tolist())
        np.testing.assert_allclose(whole.toarray()[order, i], dense[order, i])
    assert whole.has_sorted_indices


def test_top_k_memory_is_linear_in_the_kept_entries():
    # a 20k-item catalogue with a handful of co-occurrences: the selection never builds an
    # n x n (or n x block) dense array, so it finishes with O(nnz) memory
    n = 20_000
    rows = np.arange(0, n - 1)
    sim = sp.csr_matrix((np.ones(n - 1, np.float32), (rows, rows + 1)), shape=(n, n))
    sim = sim + sim.T
    import tracemalloc

    tracemalloc.start()
    w = keep_top_k(sp.csr_matrix(sim), k=5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert w.nnz == sim.nnz
    assert peak < 50 * sim.nnz * 8  # a dense 20k x 20k float32 array would be 1.6 GB
