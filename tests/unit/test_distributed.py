"""The Dask pieces on an in-process cluster (threads) and the DDP helpers without a process group.

The multi-process runs (LocalCluster processes, a killed worker, torchrun) are in
tests/integration/test_distributed.py and tests/integration/test_ddp.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.distributed.ddp import DataParallel, _share, is_main_process, world
from mmrec.distributed.extract import SharedCache, extract_modality_dask, shard_bounds, shard_plan
from mmrec.distributed.scoring import block_bounds, score_block, write_recommendations_dask
from mmrec.encoders import read_features
from mmrec.errors import ConfigError, ModelError
from mmrec.extract import extract_modality
from mmrec.recommend.topk import iter_topk
from mmrec.recommend.writer import write_recommendations
from tests.unit.test_extract import make_dataset, params
from tests.unit.test_recommend import fitted

distributed = pytest.importorskip("distributed", reason="the [dask] extra")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """Two single-threaded workers inside this process: the same scheduler logic, no spawn cost."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as lc,
        Client(lc) as c,
    ):
        yield c


def test_text_shards_follow_the_single_process_length_order_in_whole_batches():
    values = [("a", "xxxx"), ("b", None), ("c", "x"), ("d", "xxx"), ("e", "xx"), ("f", "x")]
    shards = shard_plan(values, "text", 3, 2)  # 3 items rounded up to 2 whole batches of 2
    assert [[i for i, _ in s] for s in shards] == [["c", "f", "e", "d"], ["a", "b"]]
    assert [[i for i, _ in s] for s in shard_plan(values, "image", 4, 2)] == [["a", "b", "c", "d"], ["e", "f"]]


def test_shards_and_blocks_cover_everything_once():
    assert shard_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_bounds(0, 4) == []
    # blocks are rounded up to whole chunks so workers score exactly the single-process chunks
    assert block_bounds(25, 10, 4) == [(0, 12), (12, 24), (24, 25)]
    assert all(lo % 4 == 0 for lo, _ in block_bounds(1000, 37, 8))
    with pytest.raises(ConfigError):
        shard_bounds(5, 0)
    with pytest.raises(ConfigError):
        block_bounds(5, 0, 2)


def test_shared_cache_reads_only_new_shards_and_never_compacts(tmp_path: Path):
    a, b = SharedCache(tmp_path / "c"), SharedCache(tmp_path / "c")
    for i in range(20):
        a.put(f"h{i}", np.full(3, i, np.float32))
        a.flush()
    a.compact()
    assert len(list((tmp_path / "c").glob("vectors-*.parquet"))) == 20  # other writers may be reading them
    b.load()
    assert len(b) == 20 and b.vectors["h7"][0] == 7
    b.put("hb", np.zeros(3, np.float32))
    b.flush()
    b.vectors.clear()
    b.load()  # only a's shards it has not read (none) and its own are skipped
    assert len(b) == 0
    a.load()
    assert a.has("hb")


def test_sharded_extraction_equals_single_process(tmp_path: Path, client: Any):
    ids = tuple(f"i{k}" for k in range(1, 7)) + tuple(f"x{k}" for k in range(10))
    spec, single = make_dataset(tmp_path / "a", ids=ids)
    _, dist = make_dataset(tmp_path / "b", ids=ids)
    for modality in ("text", "image"):
        e1 = extract_modality(spec, single, modality, params())
        e2 = extract_modality_dask(spec, dist, modality, params(), client, shard_items=3)
        # image: runs of 3 table rows; text: the single process's length order, whole batches of 2
        assert e2["shards"] == {"text": 4, "image": 6}[modality]
        for key in ("items", "missing", "failed"):
            assert e1[key] == e2[key], (modality, key)
        # Duplicate content in two shards running at the same time may be encoded by both (the
        # second finds it cached only if the first committed first): the split between encoded
        # and cached can differ, never the total, and the vectors below are identical.
        assert e1["encoded"] + e1["cached"] == e2["encoded"] + e2["cached"], modality
        assert e2["encoded"] >= e1["encoded"], modality
        assert [f["item_id"] for f in e1["failures"]] == [f["item_id"] for f in e2["failures"]]
        f1 = single.features(modality, e1["encoder"])
        f2 = dist.features(modality, e2["encoder"])
        assert f1.read_bytes() == f2.read_bytes()
        assert read_features(f2).item_ids == read_features(f1).item_ids
    # a re-run is resumable: everything comes from the cache, nothing is encoded again, same bytes
    first = dist.features("image", e2["encoder"]).read_bytes()
    again = extract_modality_dask(spec, dist, "image", params(), client, shard_items=3)
    assert again["encoded"] == 0 and again["cached"] == e2["encoded"] + e2["cached"]
    assert dist.features("image", again["encoder"]).read_bytes() == first


def test_content_encoded_by_two_concurrent_shards_gets_its_first_items_vector():
    """The race behind an intermittent failure of the test above: x0 has the same image as i1, and
    its shard ran before i1's shard committed, so both encoded it, in different batches (a CNN's
    last bits depend on the batch). The merged file must not depend on which shard was first."""
    from mmrec.distributed.extract import merge_results
    from mmrec.encoders.runner import ExtractionResult

    a = ExtractionResult(
        "tiny_cnn",
        "image",
        item_ids=["i1", "i2"],
        content_hashes=["h-ok", "h-cmyk"],
        vectors=np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
        encoded=2,
    )
    b = ExtractionResult(
        "tiny_cnn",
        "image",
        item_ids=["x0", "x1"],
        content_hashes=["h-ok", "h-ok"],
        vectors=np.array([[1.0, 2.0000002], [1.0, 2.0000002]], np.float32),
        encoded=1,
        cached=1,
    )
    position = {"i1": 0, "i2": 1, "x0": 2, "x1": 3}
    for parts in ([a, b], [b, a]):  # whichever shard result comes back first
        merged = merge_results(parts, "tiny_cnn", "image", 2, 0.1, position)
        assert merged.item_ids == ["i1", "i2", "x0", "x1"]
        assert merged.content_hashes == ["h-ok", "h-cmyk", "h-ok", "h-ok"]
        np.testing.assert_array_equal(merged.vectors[[2, 3]], merged.vectors[[0, 0]])
        assert merged.vectors[0].tolist() == [1.0, 2.0]


def test_scoring_by_user_blocks_writes_the_single_process_file(tmp_path: Path, client: Any):
    model = fitted(n_users=53, n_items=31)
    seen = sp.csr_matrix(model.train_matrix)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    s1 = write_recommendations(model, a, k=7, batch_size=4, exclude=seen)
    s2 = write_recommendations_dask(model, b, client, k=7, batch_size=4, exclude=seen, block_users=10, max_in_flight=2)
    assert a.read_bytes() == b.read_bytes()
    assert s2["blocks"] == 5  # 10 users rounded up to 12 (3 chunks of 4): 53 users -> 5 blocks
    for key in ("users", "users_covered", "users_full", "rows", "items_recommended", "catalogue_coverage", "score"):
        assert s1[key] == s2[key], key


def test_score_block_equals_the_chunks_of_iter_topk():
    model = fitted(n_users=20, n_items=15)
    seen = sp.csr_matrix(model.train_matrix)
    idx, val = score_block(model, 8, 20, 5, 4, seen[8:20])
    ref = [(i, v) for users, i, v in iter_topk(model, np.arange(8, 20), 5, 4, seen)]
    assert np.array_equal(idx, np.concatenate([r[0] for r in ref]))
    assert np.array_equal(val, np.concatenate([r[1] for r in ref]))


def test_unfitted_model_is_refused(tmp_path: Path, client: Any):
    from tests.unit.test_recommend import Factors

    with pytest.raises(ModelError, match="not fitted"):
        write_recommendations_dask(Factors(), tmp_path / "x.parquet", client)


def test_ddp_is_inert_without_a_process_group():
    assert world() == (0, 1) and is_main_process()
    assert DataParallel.wrap("bpr", object(), None) is None  # type: ignore[arg-type] # single-process training is untouched
    shares = [_share(7, r, 3) for r in range(3)]
    assert [(s.start, s.stop) for s in shares] == [(0, 3), (3, 5), (5, 7)]
    assert _share(1, 1, 2).stop - _share(1, 1, 2).start == 0  # a rank may get an empty share
