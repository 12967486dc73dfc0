"""One ranking rule everywhere: higher score first, equal scores by lower item index.

Every caller of `mmrec.ranking` (evaluation, `Recommender.recommend`, the nightly batch path,
Dask block scoring, exact retrieval, the API, kNN neighbour lists) is compared against a
brute-force reference (`np.lexsort` over the whole row) on inputs drawn so that ties straddle
position k: few distinct values, so the k-th score is usually shared with items outside the top k.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmrec import ranking
from mmrec.data.interactions import Interactions
from mmrec.models.base import Recommender

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None)


def reference(scores: np.ndarray, k: int) -> np.ndarray:
    """Brute force: full lexsort of each row by (-score, index); NaN ranks as -inf."""
    a = np.atleast_2d(scores)
    out = []
    for row in a:
        if row.dtype.kind == "f":
            key = np.where(np.isnan(row), np.inf, -row.astype(np.float64))
        else:  # exact for any int64/uint64 value: Python ints do not overflow
            key = np.array([-int(v) for v in row], dtype=object)
            order = sorted(range(len(row)), key=lambda j: (key[j], j))
            out.append(np.asarray(order[:k], dtype=np.int64))
            continue
        out.append(np.lexsort((np.arange(len(row)), key))[:k])
    return np.asarray(out, dtype=np.int64).reshape(len(a), min(k, a.shape[1]))


# few distinct values -> ties everywhere, across the k boundary included
int_scores = hnp.arrays(
    dtype=st.sampled_from([np.int8, np.int32, np.int64, np.uint8, np.uint64]),
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
    elements=st.integers(0, 3),
)
float_scores = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
    elements=st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.5, -np.inf, np.nan]),
)


@SETTINGS
@given(scores=st.one_of(int_scores, float_scores), k=st.integers(0, 45))
def test_topk_matches_brute_force_on_ties_straddling_k(scores, k):
    idx, val = ranking.topk(scores, k)
    ref = reference(scores, k)
    assert idx.dtype == np.int64 and idx.tolist() == ref.tolist()
    clean = np.where(np.isnan(scores), -np.inf, scores) if scores.dtype.kind == "f" else scores
    assert np.array_equal(val, np.take_along_axis(clean, ref, axis=1))
    if scores.dtype.kind == "f":
        assert not np.isnan(val).any()  # NaN comes back as -inf


@SETTINGS
@given(
    row=hnp.arrays(np.float32, st.integers(1, 60), elements=st.sampled_from([0.0, 1.0, 2.0, np.nan])),
    k=st.integers(0, 70),
)
def test_topk_one_row_in_one_row_out(row, k):
    idx, _ = ranking.topk(row, k)
    assert idx.ndim == 1 and idx.tolist() == reference(row, k)[0].tolist()


def test_topk_extreme_integers_do_not_overflow():
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    s = np.array([[lo, hi, 0, hi, lo, -1] * 5])
    assert ranking.topk(s, 4)[0].tolist() == reference(s, 4).tolist()
    u = np.array([[0, np.iinfo(np.uint64).max, 1, np.iinfo(np.uint64).max]], dtype=np.uint64)
    assert ranking.topk(u, 2)[0].tolist() == [[1, 3]]


def test_issue_example_all_equal_scores_take_the_lowest_indices():
    assert ranking.topk(np.ones((1, 50)), 3)[0].tolist() == [[0, 1, 2]]
    assert ranking.topk(np.ones(50, np.int64), 3)[0].tolist() == [0, 1, 2]


def test_big_float_blocks_take_the_torch_path_and_agree(monkeypatch):
    torch = pytest.importorskip("torch")
    assert torch is not None
    rng = np.random.default_rng(0)
    s = rng.integers(0, 4, size=(64, 5000)).astype(np.float32)  # 320k elements >= TORCH_MIN_ELEMENTS
    s[3, :] = np.nan
    used = []
    real = torch.topk
    monkeypatch.setattr(torch, "topk", lambda *a, **kw: used.append(1) or real(*a, **kw))
    idx, _ = ranking.topk(s, 17)
    assert used and idx.tolist() == reference(s, 17).tolist()


def test_topk_rejects_bad_input():
    with pytest.raises(ValueError, match="k must be >= 0"):
        ranking.topk(np.ones((2, 3)), -1)
    with pytest.raises(ValueError, match="1-D"):
        ranking.topk(np.ones((2, 3, 4)), 1)
    with pytest.raises(TypeError, match="dtype"):
        ranking.topk(np.array([["a", "b"]]), 1)


def test_mask_sparse_rows_sequences_and_errors():
    seen = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=np.float32))
    s = np.zeros((2, 3), np.float32)
    ranking.mask(s, seen, np.array([1, 0]))
    assert np.isneginf(s).tolist() == [[False, True, True], [True, False, False]]
    one = ranking.mask(np.zeros(3, np.float32), [2])
    assert np.isneginf(one).tolist() == [False, False, True]
    with pytest.raises(TypeError, match="cast to float"):
        ranking.mask(np.zeros((1, 3), np.int64), [0])
    with pytest.raises(ValueError, match="seen rows"):
        ranking.mask(np.zeros((2, 3), np.float32), seen, np.array([0]))


def test_row_blocks_cover_every_row_once():
    blocks = list(ranking.row_blocks(10, 4))
    assert [b.tolist() for b in blocks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ValueError, match="block size"):
        list(ranking.row_blocks(3, 0))


# -- every caller against the reference ---------------------------------------------------------


class Fixed(Recommender):
    """A model whose scores are a given matrix (so ties can be placed at will)."""

    name = "test_fixed_scores"

    def __init__(self, scores: np.ndarray | None = None) -> None:
        super().__init__()
        self.scores = scores

    def _fit(self, train, valid):
        pass

    def _score(self, users):
        return np.array(self.scores[users], dtype=np.float32)

    def _state(self):
        return {"scores": self.scores}

    def _load_state(self, state):
        self.scores = state["scores"]


tie_matrix = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=25),
    elements=st.sampled_from([0.0, 1.0, 2.0, 3.0]),
)


def _masked_reference(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    masked = scores.astype(np.float32).copy()
    r, c = seen.nonzero()
    masked[r, c] = -np.inf
    ref = reference(masked, k)
    return ref, np.take_along_axis(masked, ref, axis=1)


def _fitted(scores: np.ndarray, seen: sp.csr_matrix) -> Fixed:
    n_users, n_items = scores.shape
    users = np.array([f"u{i}" for i in range(n_users)], dtype=object)
    items = np.array([f"i{i}" for i in range(n_items)], dtype=object)
    return Fixed(scores).fit(Interactions(seen, users, items))


@SETTINGS
@given(scores=tie_matrix, k=st.integers(1, 30), data=st.data())
def test_every_batch_caller_ranks_like_the_reference(scores, k, data):
    from mmrec.distributed.scoring import score_block
    from mmrec.evaluate import rank_users
    from mmrec.recommend.topk import iter_topk

    n_users = scores.shape[0]
    density = data.draw(st.sampled_from([0.0, 0.2, 0.6]))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    seen = sp.csr_matrix((rng.random(scores.shape) < density).astype(np.float32))
    block = data.draw(st.integers(1, n_users))
    model = _fitted(scores, seen)
    ref, ref_val = _masked_reference(scores, seen, k)
    users = np.arange(n_users)

    idx, val = model.recommend(users, k, batch_size=block)  # Recommender.recommend
    assert idx.tolist() == ref.tolist() and np.array_equal(val, ref_val)

    batch = np.concatenate([i for _, i, _ in iter_topk(model, users, k, block, exclude=seen)])  # nightly
    assert batch.tolist() == ref.tolist()

    lo = data.draw(st.integers(0, n_users - 1))  # a Dask block: users lo.., its own history rows
    d_idx, _ = score_block(model, lo, n_users, k, block, seen[lo:])
    assert d_idx.tolist() == ref[lo:].tolist()

    ev = rank_users(model.score, users, k, exclude=seen, batch_size=block)  # evaluation
    expect = np.where(np.isneginf(ref_val), -1, ref)
    expect = np.pad(expect, ((0, 0), (0, k - expect.shape[1])), constant_values=-1)
    assert ev.tolist() == expect.tolist()


@SETTINGS
@given(
    row=hnp.arrays(np.float32, st.integers(2, 50), elements=st.sampled_from([0.0, 1.0, 2.0])),
    k=st.integers(1, 55),
    data=st.data(),
)
def test_api_top_ranks_like_the_reference(row, k, data):
    from mmrec.serve.service import _top

    exclude = data.draw(st.lists(st.integers(0, len(row) - 1), max_size=5, unique=True))
    masked = row.copy()
    masked[exclude] = -np.inf
    ref = reference(masked, k)[0]
    ref = ref[np.isfinite(masked[ref])]
    idx, val = _top(row, k, exclude)
    assert idx.tolist() == ref.tolist() and np.array_equal(val, masked[ref])


@SETTINGS
@given(
    coords=hnp.arrays(np.float32, st.tuples(st.integers(2, 60), st.just(2)), elements=st.sampled_from([0.0, 1.0, 2.0])),
    k=st.integers(1, 20),
    block_mb=st.sampled_from([1, 64]),
)
def test_exact_retrieval_ranks_like_the_reference(coords, k, block_mb):
    from mmrec.retrieval import exact_topk

    # dot products of small integer vectors: exact in float32 and full of ties
    queries = coords[:3]
    idx, val = exact_topk(queries, coords, k, metric="dot", max_block_mb=block_mb)
    scores = queries @ coords.T
    ref = reference(scores, k)
    assert idx[:, : ref.shape[1]].tolist() == ref.tolist()
    assert np.array_equal(val[:, : ref.shape[1]], np.take_along_axis(scores, ref, axis=1))


def test_exact_retrieval_tiles_keep_the_tie_rule_across_tiles():
    from mmrec.retrieval import exact_topk

    items = np.ones((9000, 2), np.float32)  # 9000 > one 4096-item tile: every score ties
    idx, _ = exact_topk(np.ones((2, 2), np.float32), items, 5, metric="dot", max_block_mb=1)
    assert idx.tolist() == [[0, 1, 2, 3, 4]] * 2


@SETTINGS
@given(sim=tie_matrix, k=st.integers(1, 30))
def test_knn_neighbours_rank_like_the_reference(sim, k):
    from mmrec.models.content_knn import topk_sparse

    graph = topk_sparse(sim, k).toarray()
    ref = reference(sim, k)
    expect = np.zeros_like(sim)
    rows = np.arange(len(sim))[:, None]
    kept = np.take_along_axis(sim, ref, axis=1)
    expect[rows, ref] = np.where(kept > 0, kept, 0)
    assert np.array_equal(graph, expect)
