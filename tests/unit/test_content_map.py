"""The ridge map from item content to item vectors (mmrec.models.content_map), against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from mmrec.errors import ModelError
from mmrec.models import content_map
from mmrec.models.content_map import RidgeMap


def closed_form(f: np.ndarray, w: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    """(F^T D F + lam I)^-1 F^T D T, written out."""
    d = np.diag(w)
    return np.linalg.inv(f.T @ d @ f + lam * np.eye(f.shape[1])) @ f.T @ d @ t


def test_one_feature_by_hand():
    # f = (1, 2), t = (2, 4), weights 1: W = sum(f t) / (sum(f^2) + lam) = 10 / (5 + 1)
    w = RidgeMap(np.array([[1.0], [2.0]]), np.ones(2), lam=1.0).solve(np.array([[2.0], [4.0]]))
    assert w == pytest.approx(np.array([[10.0 / 6.0]]))
    # weight 3 on the second row: (2 + 3 * 8) / (1 + 3 * 4 + 1)
    w = RidgeMap(np.array([[1.0], [2.0]]), np.array([1.0, 3.0]), lam=1.0).solve(np.array([[2.0], [4.0]]))
    assert w == pytest.approx(np.array([[26.0 / 14.0]]))


@pytest.mark.parametrize(("rows", "dims"), [(40, 6), (5, 12)])
def test_primal_and_dual_match_the_closed_form(rows, dims):
    rng = np.random.default_rng(0)
    f, t, w = rng.normal(size=(rows, dims)), rng.normal(size=(rows, 3)), rng.uniform(0.0, 2.0, rows)
    ridge = RidgeMap(f, w, lam=0.7)
    assert ridge.dual == (rows < dims)
    np.testing.assert_allclose(ridge.solve(t), closed_form(f, w, t, 0.7), rtol=1e-8, atol=1e-10)


def test_blocks_of_rows_add_up_to_the_whole(monkeypatch):
    rng = np.random.default_rng(2)
    f = rng.normal(size=(40, 6)).astype(np.float32)  # float32 features are kept as they are
    t, w = rng.normal(size=(40, 2)), rng.uniform(0.0, 2.0, 40)
    monkeypatch.setattr(content_map, "CHUNK", 7)  # 6 blocks, the last one short
    np.testing.assert_allclose(
        RidgeMap(f, w, lam=0.3).solve(t), closed_form(f.astype(np.float64), w, t, 0.3), rtol=1e-8
    )


def test_recovers_a_planted_map_and_ignores_zero_weight_rows():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(200, 5))
    true = rng.normal(size=(5, 4))
    t = f @ true
    w = np.ones(200)
    t[:20] = 100.0  # corrupt rows that carry no weight
    w[:20] = 0.0
    np.testing.assert_allclose(RidgeMap(f, w, lam=1e-6).solve(t), true, atol=1e-5)


def test_bad_inputs_are_named():
    f = np.ones((3, 2))
    with pytest.raises(ModelError, match="lam"):
        RidgeMap(f, np.ones(3), lam=0.0)
    with pytest.raises(ModelError, match="weights"):
        RidgeMap(f, np.ones(2), lam=1.0)
    with pytest.raises(ModelError, match="weights"):
        RidgeMap(f, np.array([1.0, -1.0, 1.0]), lam=1.0)
    with pytest.raises(ModelError, match="features"):
        RidgeMap(np.array([[1.0, np.nan]] * 3), np.ones(3), lam=1.0)
    with pytest.raises(ModelError, match="targets"):
        RidgeMap(f, np.ones(3), lam=1.0).solve(np.ones((4, 2)))
