"""Batch top-K generation: ordering, masking, chunking, completeness and the atomic swap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mmrec.config import Params
from mmrec.data.contract import load_dataset_spec
from mmrec.data.interactions import Interactions
from mmrec.errors import DataError, ModelError
from mmrec.models import create_model
from mmrec.models.base import Recommender
from mmrec.params.recommend import RecommendParams, recommend_params
from mmrec.recommend.id_files import read_user_ids
from mmrec.recommend.run import run_recommend
from mmrec.recommend.topk import history_matrix, iter_topk, recommend_for_ids
from mmrec.recommend.writer import summary_markdown, write_recommendations
from mmrec.stages import StageContext
from tests.conftest import FIXTURES


class Factors(Recommender):
    """Fixed random factors (what BPR exports) plus a call log, to test scoring in chunks."""

    name = "test_factors"

    def __init__(self, n_users: int = 50, n_items: int = 30, dim: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.n_users_, self.n_items_, self.dim, self.seed = n_users, n_items, dim, seed
        self.calls: list[int] = []

    def _fit(self, train, valid):
        rng = np.random.default_rng(self.seed)
        self.u = rng.standard_normal((train.n_users, self.dim)).astype(np.float32)
        self.v = rng.standard_normal((train.n_items, self.dim)).astype(np.float32)

    def _score(self, users):
        self.calls.append(len(users))
        return self.u[users] @ self.v.T

    def _state(self):
        return {"u": self.u, "v": self.v}

    def _load_state(self, state):
        self.u, self.v = state["u"], state["v"]


def fitted(n_users: int = 50, n_items: int = 30, density: float = 0.2, seed: int = 0) -> Factors:
    rng = np.random.default_rng(seed)
    m = sp.csr_matrix((rng.random((n_users, n_items)) < density).astype(np.float32))
    users = np.array([f"u{i:03d}" for i in range(n_users)], dtype=object)
    items = np.array([f"i{i:03d}" for i in range(n_items)], dtype=object)
    return Factors(n_users, n_items, seed=seed).fit(Interactions(m, users, items))


def test_chunks_are_bounded_and_invisible():
    model = fitted()
    model.calls.clear()
    small = list(iter_topk(model, k=5, batch_size=7, exclude=model.train_matrix))
    assert max(model.calls) <= 7 and sum(model.calls) == 50  # never more than one chunk of scores
    big = list(iter_topk(model, k=5, batch_size=1000, exclude=model.train_matrix))
    assert np.array_equal(np.concatenate([c[1] for c in small]), big[0][1])


def test_seen_items_are_masked():
    model = fitted()
    for users, idx, val in iter_topk(model, k=10, batch_size=16, exclude=model.train_matrix):
        for u, row, v in zip(users, idx, val, strict=True):
            seen = set(model.train_matrix[u].indices)
            assert not seen & set(row[np.isfinite(v)].tolist())


def test_written_file_is_complete_and_deduplicated(tmp_path: Path):
    model = fitted(density=0.3)
    # user 0 has seen every item but two: only two recommendations exist for them
    tm = model.train_matrix.tolil()
    tm[0, :] = 1.0
    tm[0, 3] = 0.0
    tm[0, 7] = 0.0
    model.train_matrix = sp.csr_matrix(tm)
    out = tmp_path / "recs" / "latest.parquet"
    summary = write_recommendations(model, out, k=5, batch_size=8, exclude=model.train_matrix)
    df = pd.read_parquet(out)
    assert list(df.columns) == ["user_id", "item_id", "rank", "score"]
    assert df.duplicated(["user_id", "item_id"]).sum() == 0
    assert set(df.user_id) == set(model.user_ids)  # every user
    per_user = df.groupby("user_id")["rank"].apply(list)
    assert per_user["u000"] == [1, 2] and set(df[df.user_id == "u000"].item_id) == {"i003", "i007"}
    assert all(r == list(range(1, 6)) for u, r in per_user.items() if u != "u000")
    assert (df.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    assert summary["users"] == 50 and summary["users_covered"] == 50 and summary["users_full"] == 49
    assert summary["rows"] == len(df) == 49 * 5 + 2
    assert summary["items_recommended"] == df.item_id.nunique()
    assert summary["catalogue_coverage"] == pytest.approx(df.item_id.nunique() / 30)
    assert summary["score"]["min"] <= summary["score"]["p50"] <= summary["score"]["max"]
    assert "| 50 | 50 | 49 |" in summary_markdown({**summary, "dataset": "x", "model": {"name": "f"}})


def test_crash_keeps_previous_file(tmp_path: Path):
    model = fitted()
    out = tmp_path / "latest.parquet"
    write_recommendations(model, out, k=3, batch_size=10)
    before = out.read_bytes()
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_recommendations(model, out, k=7, batch_size=10, fail_after_batches=2)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.parquet"]  # no half-written file left


def test_history_adds_valid_and_test_interactions():
    model = fitted(density=0.0)
    seen = pd.DataFrame({"user_id": ["u001", "u001", "nobody"], "item_id": ["i002", "i999", "i001"]})
    h = history_matrix(model, seen)
    assert h[1].indices.tolist() == [2] and h.nnz == 1  # unknown ids cannot be masked and are ignored


def test_recommend_for_ids_known_unknown_and_order():
    model = fitted()
    df = recommend_for_ids(model, ["u010", "stranger", "u002", "u010"], k=4)
    assert list(dict.fromkeys(df.user_id)) == ["u010", "stranger", "u002"]
    assert df.groupby("user_id").size().tolist() == [4, 4, 4]
    pop = np.asarray(model.train_matrix.sum(axis=0)).ravel()
    assert set(df[df.user_id == "stranger"].item_id) == {model.item_ids[i] for i in np.argsort(-pop, kind="stable")[:4]}
    assert not set(model.train_matrix[10].indices) & {int(i[1:]) for i in df[df.user_id == "u010"].item_id}


def test_read_user_ids(tmp_path: Path):
    (tmp_path / "a.txt").write_text("u1\n\nu2\n")
    (tmp_path / "b.csv").write_text("user_id,x\nu3,1\n")
    assert read_user_ids(tmp_path / "a.txt") == ["u1", "u2"]
    assert read_user_ids(tmp_path / "b.csv") == ["u3"]
    with pytest.raises(DataError, match="not found"):
        read_user_ids(tmp_path / "missing.txt")


def test_unfitted_model_and_params():
    with pytest.raises(ModelError, match="not fitted"):
        list(iter_topk(create_model("popularity")))
    assert recommend_params(Params()) == RecommendParams()
    assert recommend_params(type("P", (), {"recommend": {"k": 5}})()).k == 5


def test_run_recommend_writes_latest_and_report(tmp_path: Path):
    spec = load_dataset_spec(FIXTURES / "tiny" / "dataset.yaml")
    ctx = StageContext(spec=spec, params=Params(), workspace=tmp_path)
    model = fitted(n_users=6, n_items=8, density=0.3)
    validated = ctx.paths.validated_table("interactions")
    validated.parent.mkdir(parents=True)
    unseen = sorted(set(range(8)) - set(model.train_matrix[0].indices))
    best = max(unseen, key=lambda i: model.score(np.array([0]))[0, i])  # u000's top recommendation...
    pd.DataFrame({"user_id": ["u000"], "item_id": [f"i{best:03d}"]}).to_parquet(validated)  # ...already consumed
    summary = run_recommend(ctx, k=3, model=model, model_info={"version": "7"})
    df = pd.read_parquet(ctx.paths.recommendations)
    assert summary["model"] == {"name": "test_factors", "version": "7"} and summary["dataset"] == "tiny"
    assert f"i{best:03d}" not in set(df[df.user_id == "u000"].item_id)  # a validation-time interaction is masked too
    assert len(df[df.user_id == "u000"]) == min(3, len(unseen) - 1)
    assert (ctx.paths.reports / "recommendations.json").is_file() and (
        ctx.paths.reports / "recommendations.md"
    ).is_file()


def test_chunk_size_is_bounded_by_memory():
    rp = RecommendParams(batch_size=1024, max_chunk_mb=100)
    assert rp.chunk_users(1_000) == 1024  # small catalogue: the batch size
    assert rp.chunk_users(1_000_000) == (100 << 20) // 4_000_000  # 1M items: 26 users per 100 MB chunk
    assert RecommendParams(max_chunk_mb=1).chunk_users(10**9) == 1
