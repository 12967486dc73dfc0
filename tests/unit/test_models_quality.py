"""Behavioural tests: on data with planted structure the collaborative models beat popularity;
LightGCN's graph pieces are checked against dense computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.evaluate import evaluate_scores
from mmrec.models import create_model
from mmrec.models.lightgcn import _sparse_product_function, normalized_adjacency, sparse_product, to_torch_csr


def planted(seed: int = 0) -> tuple[Interactions, sp.csr_matrix]:
    """90 users in 3 taste groups of 12 items each (group sizes 45/30/15, so popularity favours
    group 0). Each user has 6 training items and 2 validation items, all inside their group."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 90, 36
    group = np.repeat([0, 1, 2], [45, 30, 15])
    train = np.zeros((n_users, n_items), np.float32)
    valid = np.zeros((n_users, n_items), np.float32)
    for u in range(n_users):
        items = 12 * group[u] + rng.choice(12, size=8, replace=False)
        train[u, items[:6]] = 1
        valid[u, items[6:]] = 1
    data = Interactions(sp.csr_matrix(train), np.arange(n_users).astype(str), np.arange(n_items).astype(str))
    return data, sp.csr_matrix(valid)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("itemknn", {"k": 20}),
        ("bpr", {"dim": 16, "lr": 0.02, "batch_size": 64, "max_epochs": 40, "patience": 5}),
        ("lightgcn", {"dim": 16, "lr": 0.02, "batch_size": 64, "max_epochs": 40, "patience": 5}),
        # the batch-node estimator (control variates + random walks) must learn the same groups
        (
            "lightgcn",
            {
                "dim": 16,
                "lr": 0.02,
                "batch_size": 64,
                "max_epochs": 40,
                "patience": 5,
                "propagation": "sampled",
                "walks": 4,
                "refresh_every": 3,
            },
        ),
    ],
)
def test_collaborative_models_beat_popularity_on_planted_groups(name, params):
    data, valid = planted()
    pop = create_model("popularity").fit(data)
    model = create_model(name, **params).fit(data, valid)
    r_pop = evaluate_scores(pop.score, valid, exclude=data.matrix, ks=(5,))["recall@5"]
    r_model = evaluate_scores(model.score, valid, exclude=data.matrix, ks=(5,))["recall@5"]
    # popularity can only serve group 0 (half the users); a model that found the groups serves all
    assert r_pop < 0.5
    assert r_model > r_pop + 0.25


def test_normalized_adjacency_by_hand():
    r = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0]], np.float32))  # 2 users, 3 items; item 2 unseen
    a = normalized_adjacency(r).toarray()
    # degrees: users [2, 1], items [1, 2, 0]; entry (u, i) = 1 / sqrt(d_u d_i)
    expected = np.zeros((5, 5))
    for u, i in [(0, 0), (0, 1), (1, 1)]:
        d_u, d_i = [2, 1][u], [1, 2, 0][i]
        expected[u, 2 + i] = expected[2 + i, u] = 1 / np.sqrt(d_u * d_i)
    np.testing.assert_allclose(a, expected, rtol=1e-6)
    assert not a[4].any()  # an isolated node keeps only its own embedding


def assert_product_matches_dense(matrix: sp.csr_matrix, product) -> None:
    """`product(x)` equals `matrix @ x`, and so does its gradient with respect to x."""
    import torch

    x = torch.randn(matrix.shape[1], 3, dtype=torch.float32, requires_grad=True)
    w = torch.randn(matrix.shape[0], 3)
    out = product(x)
    (out * w).sum().backward()
    dense = torch.from_numpy(matrix.toarray())
    x2 = x.detach().clone().requires_grad_()
    ((dense @ x2) * w).sum().backward()
    torch.testing.assert_close(out, dense @ x.detach())
    torch.testing.assert_close(x.grad, x2.grad)


def test_symmetric_product_gradient_matches_dense():
    import torch

    rng = np.random.default_rng(0)
    r = sp.csr_matrix((rng.random((6, 5)) < 0.5).astype(np.float32))
    adj = normalized_adjacency(r)
    csr = to_torch_csr(adj, torch.device("cpu"))
    # symmetric: passed as its own transpose
    assert_product_matches_dense(adj, lambda x: _sparse_product_function().apply(csr, csr, x))


def test_sparse_product_gradient_matches_dense_for_a_rectangular_matrix():
    rng = np.random.default_rng(1)
    m = sp.csr_matrix(rng.random((4, 7)) * (rng.random((4, 7)) < 0.5), dtype=np.float32)
    assert_product_matches_dense(m, lambda x: sparse_product(m, x))


def test_lightgcn_without_layers_scores_with_ego_embeddings():
    data, valid = planted()
    model = create_model("lightgcn", dim=4, n_layers=0, max_epochs=1, batch_size=128).fit(data, valid)
    assert model.user_factors is not None and model.user_factors.shape == (90, 4)
    assert model.item_factors is not None and model.item_factors.shape == (36, 4)
