"""Similarity metrics, blocked exact top-K and the item index (exact and HNSW), on tiny matrices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmrec.errors import ConfigError, DataError, NotFoundError
from mmrec.retrieval import ItemIndex, exact_topk, iter_similarity, similarity

NAN = np.nan
#            x0        x1        x2 (missing)  x3
ITEMS = np.array([[1, 0], [0, 2], [NAN, NAN], [3, 4]], np.float32)
QUERIES = np.array([[1, 0], [1, 1]], np.float32)


def test_cosine_by_hand():
    s = similarity(QUERIES, ITEMS, "cosine")
    r = 1 / np.sqrt(2)
    expected = [[1.0, 0.0, NAN, 0.6], [r, r, NAN, 7 / (5 * np.sqrt(2))]]
    np.testing.assert_allclose(s, expected, atol=1e-6)
    assert s.dtype == np.float32


def test_dot_by_hand():
    np.testing.assert_allclose(similarity(QUERIES, ITEMS, "dot"), [[1, 0, NAN, 3], [1, 2, NAN, 7]])


def test_euclidean_is_negative_distance():
    s = similarity(QUERIES, ITEMS, "euclidean")
    expected = [[0.0, -np.sqrt(5), NAN, -np.sqrt(20)], [-1.0, -np.sqrt(2), NAN, -np.sqrt(13)]]
    np.testing.assert_allclose(s, expected, atol=1e-3)
    assert np.nanmax(s) <= 0


def test_pearson_is_cosine_of_row_centred_vectors():
    q = np.array([[1, 2, 3]], np.float32)
    x = np.array([[2, 4, 6], [3, 2, 1], [1, 3, 2], [5, 5, 5]], np.float32)
    s = similarity(q, x, "pearson")
    # [5,5,5] is constant: its correlation is undefined (NaN), not 0
    np.testing.assert_allclose(s[0, :3], [1.0, -1.0, 0.5], atol=1e-6)
    assert np.isnan(s[0, 3])
    np.testing.assert_allclose(s[0, :3], [np.corrcoef(q[0], r)[0, 1] for r in x[:3]], atol=1e-6)


def test_masked_and_zero_vectors_are_undefined():
    mask = np.array([True, False, True, True])
    s = similarity(QUERIES, np.nan_to_num(ITEMS), "dot", item_mask=mask)
    assert np.isnan(s[:, 1]).all() and not np.isnan(s[:, 0]).any()
    # zero vector (the nan_to_num of the missing row): a legal dot product, no cosine
    assert similarity(QUERIES, np.nan_to_num(ITEMS), "dot")[0, 2] == 0
    assert np.isnan(similarity(QUERIES, np.nan_to_num(ITEMS), "cosine")[:, 2]).all()


def test_blocks_are_bounded_and_agree():
    rng = np.random.default_rng(0)
    q, x = rng.standard_normal((50, 8)), rng.standard_normal((300, 8))
    full = similarity(q, x, "cosine")
    blocks = list(iter_similarity(q, x, "cosine", max_block_mb=0))  # 0 MB: one row per block
    assert len(blocks) == 50 and all(b.shape == (1, 300) for _, b in blocks)
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks]), full, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(ConfigError, match="unknown similarity metric 'manhattan'"):
        similarity(QUERIES, ITEMS, "manhattan")
    with pytest.raises(DataError, match="dimension"):
        similarity(np.ones((1, 3)), ITEMS, "dot")
    with pytest.raises(DataError, match="mix finite and non-finite"):
        similarity(QUERIES, np.array([[1, NAN]]), "dot")


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean", "pearson"])
def test_exact_topk_matches_full_sort_across_tiles(metric):
    rng = np.random.default_rng(1)
    q, x = rng.standard_normal((37, 6)), rng.standard_normal((9000, 6))  # > one 4096-item tile
    idx, val = exact_topk(q, x, 7, metric, max_block_mb=1)
    full = similarity(q, x, metric)
    ref = np.argsort(-full, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(val, np.take_along_axis(full, ref, axis=1), atol=1e-5)


def test_exact_topk_ties_allowed_and_excluded():
    x = np.array([[1, 0], [1, 0], [0, 1], [1, 0]], np.float32)
    idx, val = exact_topk(np.array([[1, 0]]), x, 3, "dot")
    assert idx.tolist() == [[0, 1, 3]]  # ties by lower index
    allowed = np.array([True, False, True, True])
    idx, val = exact_topk(np.array([[1, 0]]), x, 3, "dot", allowed=allowed, exclude_rows=[{3}])
    assert idx.tolist() == [[0, 2, -1]] and val[0, 2] == -np.inf


# -- ItemIndex -------------------------------------------------------------------------------

IDS = ["a", "b", "c", "d", "e"]
VECS = np.array([[1, 0], [0.9, 0.1], [0, 1], [NAN, NAN], [-1, 0]], np.float32)


def test_similar_by_hand_excludes_self_and_missing():
    index = ItemIndex.build(IDS, VECS, "cosine")
    assert index.backend == "exact" and len(index) == 5 and index.dim == 2
    (res,) = index.similar("a", k=10)
    assert [i for i, _ in res] == ["b", "c", "e"]  # not a itself, never d (no vector)
    np.testing.assert_allclose([s for _, s in res], [0.9 / np.sqrt(0.82), 0.0, -1.0], atol=1e-6)
    assert index.similar(["d"], k=3) == [[]]  # known item, no vector: no neighbours
    assert index.has_vector("a") and not index.has_vector("d") and index.vector("d") is None


def test_unknown_item_is_not_found():
    index = ItemIndex.build(IDS, VECS, "dot")
    with pytest.raises(NotFoundError) as err:
        index.similar(["a", "zz"], k=2)
    assert err.value.kind == "item" and err.value.key == "zz"
    with pytest.raises(NotFoundError):
        index.vector("zz")


def test_search_exclude_and_candidates():
    index = ItemIndex.build(IDS, VECS, "dot", mask=np.array([True, True, True, True, True]) & ~np.isnan(VECS[:, 0]))
    (res,) = index.search(np.array([1.0, 0.0]), k=2)
    assert res == [("a", 1.0), ("b", pytest.approx(0.9))]
    (res,) = index.search(np.array([1.0, 0.0]), k=5, exclude=["a", "not-there"])
    assert [i for i, _ in res] == ["b", "c", "e"]
    (res,) = index.search(np.array([1.0, 0.0]), k=5, candidates=["c", "e", "d", "nope"])
    assert [i for i, _ in res] == ["c", "e"]  # d has no vector, nope is unknown
    assert index.search(np.array([NAN, NAN]), k=2) == [[]]


def test_build_errors():
    with pytest.raises(DataError, match="duplicate item ids"):
        ItemIndex.build(["a", "a"], np.ones((2, 2)), "dot")
    with pytest.raises(DataError, match="2 item ids but 3 vectors"):
        ItemIndex.build(["a", "b"], np.ones((3, 2)), "dot")
    with pytest.raises(ConfigError, match="backend"):
        ItemIndex.build(["a"], np.ones((1, 2)), "dot", backend="annoy")
    with pytest.raises(ConfigError, match="metric"):
        ItemIndex.build(["a"], np.ones((1, 2)), "l1")


@pytest.fixture
def one_faiss_thread():
    """faiss's OpenMP threads spin-wait: on a busy 2-core box one thread builds 4x faster."""
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean", "pearson"])
def test_hnsw_recall_against_exact(metric, one_faiss_thread):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2000, 24)).astype(np.float32)
    x[::50] = NAN  # some items without a vector
    ids = [f"i{i}" for i in range(len(x))]
    exact = ItemIndex.build(ids, x, metric, backend="exact")
    ann = ItemIndex.build(ids, x, metric, backend="hnsw")  # default graph parameters
    assert ann.backend == "hnsw"
    queries = [f"i{i}" for i in range(1, 2000, 10)]
    hits = [
        len({i for i, _ in e} & {i for i, _ in a}) / 10
        for e, a in zip(exact.similar(queries, 10), ann.similar(queries, 10), strict=True)
    ]
    assert np.mean(hits) >= 0.95
    missing = {f"i{i}" for i in range(0, 2000, 50)}
    for res, q in zip(ann.similar(queries, 10), queries, strict=True):
        assert len(res) == 10 and q not in {i for i, _ in res} and not missing & {i for i, _ in res}
    # ANN scores are the metric's own scores, not faiss distances
    e0, a0 = exact.similar(queries[:1], 1)[0][0], ann.similar(queries[:1], 1)[0][0]
    if e0[0] == a0[0]:
        assert a0[1] == pytest.approx(e0[1], abs=1e-3)


def test_auto_backend_threshold(monkeypatch, one_faiss_thread):
    import mmrec.retrieval as retrieval

    monkeypatch.setattr(retrieval, "ANN_THRESHOLD", 10)
    x = np.random.default_rng(0).standard_normal((12, 4))
    assert ItemIndex.build([str(i) for i in range(12)], x, "cosine").backend == "hnsw"
    x[:3] = NAN  # 9 vectors left: under the threshold
    assert ItemIndex.build([str(i) for i in range(12)], x, "cosine").backend == "exact"


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_save_load_round_trip(tmp_path: Path, backend, one_faiss_thread):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    x[5] = NAN
    ids = [f"m{i}" for i in range(200)]
    index = ItemIndex.build(ids, x, "euclidean", backend=backend)
    out = index.save(tmp_path / "idx")
    assert json.loads((out / "index.json").read_text())["backend"] == backend
    again = ItemIndex.load(out)
    assert again.backend == backend and again.metric == "euclidean" and list(again.item_ids) == ids
    assert again.similar(["m0", "m5", "m9"], 5) == index.similar(["m0", "m5", "m9"], 5)
    assert not list(tmp_path.glob(".idx*"))  # no temporary folder left behind
    index.save(out)  # overwrite in place
    assert ItemIndex.load(out).similar("m1", 3) == index.similar("m1", 3)


def test_load_errors(tmp_path: Path):
    with pytest.raises(DataError, match="not a saved item index"):
        ItemIndex.load(tmp_path)
    index = ItemIndex.build(IDS, VECS, "cosine").save(tmp_path / "i")
    meta = json.loads((index / "index.json").read_text())
    (index / "index.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(DataError, match="format 99"):
        ItemIndex.load(index)
