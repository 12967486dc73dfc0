"""Generation strategies (popularity, content, model, hybrid), thresholds and business filters on tiny data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mmrec.config import Params, load_params
from mmrec.data.contract import load_dataset_spec
from mmrec.data.interactions import Interactions
from mmrec.errors import ConfigError, DataError
from mmrec.models.base import Recommender
from mmrec.params.recommend import RecommendParams, parse_recommend_params
from mmrec.recommend.run import run_recommend
from mmrec.recommend.strategies import (
    ContentScores,
    StrategyScorer,
    allowed_items,
    build_scorer,
    minmax_normalise,
    rank_normalise,
)
from mmrec.recommend.topk import iter_topk, recommend_for_ids
from mmrec.retrieval import similarity
from mmrec.stages import StageContext
from tests.conftest import FIXTURES

NAN = np.nan
ITEMS = np.array(["i0", "i1", "i2", "i3", "i4", "i5"], dtype=object)
USERS = np.array(["u0", "u1", "u2"], dtype=object)
# who saw what: u0 {i0}, u1 {i0, i1, i2}, u2 nothing (cold)
TRAIN = sp.csr_matrix(
    np.array(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        np.float32,
    )
)
# popularity: i0 2, i1 1, i2 1, others 0
MODEL_SCORES = np.array(
    [
        [0.0, 0.1, 0.2, 0.9, 0.5, 0.3],
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
    ],
    np.float32,
)
#                     i0      i1      i2      i3      i4          i5
TEXT = np.array([[1, 0], [0, 1], [1, 1], [1, 0.1], [-1, 0], [NAN, NAN]], np.float32)
TEXT_MASK = np.array([True, True, True, True, True, False])


class Fixed(Recommender):
    """Scores are a fixed table: lets each strategy be checked by hand."""

    name = "fixed"

    def _fit(self, train, valid):
        pass

    def _score(self, users):
        return MODEL_SCORES[users].copy()

    def _state(self):
        return {}

    def _load_state(self, state):
        pass


def model() -> Fixed:
    return Fixed().fit(Interactions(TRAIN, USERS, ITEMS))


def content(metric: str = "cosine", centre: bool = False, **kw) -> ContentScores:
    return ContentScores({"text": np.nan_to_num(TEXT)}, {"text": TEXT_MASK}, metric, centre=centre, **kw)


def top(scorer, k: int = 6, exclude_seen: bool = True) -> dict[str, list[str]]:
    rows = recommend_for_ids(scorer, list(USERS) + ["stranger"], k=k, exclude_seen=exclude_seen)
    return {u: g.sort_values("rank").item_id.tolist() for u, g in rows.groupby("user_id")}


# -- normalisation ----------------------------------------------------------------------------------


def test_rank_normalise_by_hand():
    s = np.array([[3.0, 1.0, -np.inf, 1.0, 5.0]], np.float32)
    # finite ranks: 1 -> 1.5 (tie), 3 -> 3, 5 -> 4; four finite items
    np.testing.assert_allclose(rank_normalise(s), [[0.75, 0.375, 0.0, 0.375, 1.0]])


def test_minmax_normalise_by_hand():
    s = np.array([[3.0, 1.0, -np.inf, 5.0], [2.0, 2.0, 2.0, NAN]], np.float32)
    np.testing.assert_allclose(minmax_normalise(s), [[0.5, 0.0, 0.0, 1.0], [0, 0, 0, 0]])


# -- strategies -------------------------------------------------------------------------------------


def test_default_is_the_model_itself():
    m = model()
    assert build_scorer(m, RecommendParams()) is m  # nothing changes unless configured


def test_model_strategy_excludes_seen():
    recs = top(StrategyScorer(model(), "model"), k=3)
    assert recs["u0"] == ["i3", "i4", "i5"]  # i0 seen
    assert recs["u1"] == ["i5", "i4", "i3"]
    assert recs["u2"] == ["i0", "i1", "i2"]  # no history, but the model scores it


def test_popularity_strategy():
    recs = top(StrategyScorer(model(), "popularity"), k=3)
    # i0 seen; i1/i2 tie (lower index first); the third is one of the never-seen items (all tie at 0)
    assert recs["u0"][:2] == ["i1", "i2"] and recs["u0"][2] in {"i3", "i4", "i5"}
    assert recs["u2"] == recs["stranger"] == ["i0", "i1", "i2"]


def test_content_cosine_by_hand():
    c = content("cosine")
    s = c.score(TRAIN)
    # u0's history is {i0}: the cosine of each item with i0 = [1, 0]
    np.testing.assert_allclose(s[0, :5], [1.0, 0.0, 1 / np.sqrt(2), 1 / np.sqrt(1.01), -1.0], atol=1e-6)
    assert np.isnan(s[0, 5])  # i5 has no text: no content score, not 0
    # u1's history {i0, i1, i2}: mean of the three cosines
    full = similarity(np.nan_to_num(TEXT), np.nan_to_num(TEXT), "cosine", item_mask=TEXT_MASK)
    np.testing.assert_allclose(s[1, :5], full[:5, :3].mean(axis=1), atol=1e-6)
    assert np.isnan(s[2]).all()  # no history
    recs = top(StrategyScorer(model(), "content", content=c), k=6)
    assert recs["u0"] == ["i3", "i2", "i1", "i4"]  # i0 seen, i5 never (no vector)
    assert recs["u2"] == ["i0", "i1", "i2", "i3", "i4", "i5"]  # no history: popularity


@pytest.mark.parametrize("metric", ["dot", "euclidean", "pearson"])
def test_content_is_the_mean_pairwise_similarity(metric):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 5)).astype(np.float32)
    mask = np.ones(20, bool)
    mask[[3, 11]] = False
    hist = sp.csr_matrix((rng.random((4, 20)) < 0.3).astype(np.float32))
    got = ContentScores({"image": x}, {"image": mask}, metric, centre=False, max_block_mb=0).score(hist)
    pair = similarity(x, x, metric, query_mask=mask, item_mask=mask)  # (20, 20), NaN where absent
    for u in range(4):
        h = [j for j in hist[u].indices if mask[j]]
        expected = pair[:, h].mean(axis=1) if h else np.full(20, NAN)
        # euclidean goes through |x|^2 + |y|^2 - 2xy in float32: cancellation near distance 0
        # costs ~1e-4 on some BLAS builds (AVX-512 kernels sum in another order)
        np.testing.assert_allclose(got[u], expected, atol=5e-4 if metric == "euclidean" else 1e-4)


def test_content_fuses_modalities_present_for_both():
    text = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    image = np.array([[1, 0], [0, 0], [-1, 0]], np.float32)
    img_mask = np.array([True, False, True])  # item 1 has no image
    c = ContentScores(
        {"text": text, "image": image},
        {"text": np.ones(3, bool), "image": img_mask},
        "cosine",
        weights={"text": 1.0, "image": 3.0},
        centre=False,
    )
    s = c.score(sp.csr_matrix(np.array([[1, 0, 0]], np.float32)))  # history: item 0
    # item 1: text only (cos 1); item 2: (1 * 0 + 3 * -1) / 4; item 0: 1
    np.testing.assert_allclose(s[0], [1.0, 1.0, -0.75], atol=1e-6)


def test_hybrid_rank_blend_by_hand():
    scorer = StrategyScorer(model(), "hybrid", hybrid_weights={"model": 1.0, "popularity": 1.0})
    s = scorer.score(np.array([0]))
    model_r = rank_normalise(MODEL_SCORES[:1])
    pop_r = rank_normalise(np.array([[2, 1, 1, 0, 0, 0]], np.float32))
    np.testing.assert_allclose(s, 0.5 * model_r + 0.5 * pop_r, atol=1e-6)
    assert s.min() >= 0 and s.max() <= 1
    minmax = StrategyScorer(model(), "hybrid", hybrid_weights={"model": 3.0, "popularity": 1.0}, normalise="minmax")
    expected = 0.75 * MODEL_SCORES[0] / 0.9 + 0.25 * np.array([1, 0.5, 0.5, 0, 0, 0])
    np.testing.assert_allclose(minmax.score(np.array([0]))[0], expected, atol=1e-6)


def test_hybrid_with_content_ranks_unscorable_items_last_in_that_component():
    scorer = StrategyScorer(model(), "hybrid", content=content(), hybrid_weights={"content": 1.0})
    s = scorer.score(np.array([0]))[0]
    # i5 (no text) is content's worst; i0 itself ranks first (seen items are masked later), then i3
    np.testing.assert_allclose(s, [1.0, 0.4, 0.6, 0.8, 0.2, 0.0], atol=1e-6)


# -- threshold and filters --------------------------------------------------------------------------


def test_threshold_yields_fewer_than_k():
    scorer = StrategyScorer(model(), "content", content=content(), threshold=0.5)
    recs = top(scorer, k=5)
    assert recs["u0"] == ["i3", "i2"]  # only cos >= 0.5 with i0 pass (i1 = 0, i4 = -1)
    _, _idx, val = next(iter_topk(scorer, np.array([0]), k=5, exclude=TRAIN))
    assert np.isfinite(val).sum() == 2


def test_excluded_items_never_appear():
    allowed = allowed_items(ITEMS, exclude=["i3", "i5", "not-in-catalogue"])
    for strategy in ("model", "popularity"):
        recs = top(StrategyScorer(model(), strategy, allowed=allowed), k=6, exclude_seen=False)
        for items in recs.values():
            assert not {"i3", "i5"} & set(items) and len(items) == 4


def test_candidate_restriction_is_honoured():
    allowed = allowed_items(ITEMS, candidates=["i4", "i1", "ghost"])
    assert allowed.tolist() == [False, True, False, False, True, False]
    recs = top(StrategyScorer(model(), "model", allowed=allowed), k=6)
    assert recs["u0"] == ["i4", "i1"] and recs["u1"] == ["i4"]  # u1 saw i1
    assert recs["stranger"] == ["i1", "i4"]  # the cold-user fallback is filtered too
    with pytest.raises(DataError, match="none of the 1 candidate item ids"):
        allowed_items(ITEMS, candidates=["ghost"])
    assert allowed_items(ITEMS) is None


def test_build_scorer_reads_filter_files(tmp_path: Path):
    (tmp_path / "ex.txt").write_text("i0\ni1\n")
    (tmp_path / "cand.csv").write_text("item_id,why\ni0,x\ni1,y\ni2,z\n")
    rp = RecommendParams(
        strategy="popularity", exclude_items=["i2"], exclude_items_file="ex.txt", candidates_file="cand.csv"
    )
    scorer = build_scorer(model(), rp, base_dir=tmp_path)
    assert np.isfinite(scorer.score(np.array([2]))[0]).sum() == 0  # every candidate excluded
    with pytest.raises(DataError, match="not found"):
        build_scorer(model(), RecommendParams(candidates_file="nope.txt"), base_dir=tmp_path)


def test_build_scorer_content_needs_features():
    rp = RecommendParams(strategy="content")
    with pytest.raises(ConfigError, match="feature loader"):
        build_scorer(model(), rp)
    with pytest.raises(DataError, match="extract"):
        build_scorer(model(), rp, load_features=lambda mods: ({}, {}))
    got = build_scorer(model(), rp, load_features=lambda mods: ({"text": np.nan_to_num(TEXT)}, {"text": TEXT_MASK}))
    assert isinstance(got, StrategyScorer) and got.content is not None


# -- configuration ------------------------------------------------------------------------------------


def test_unknown_strategy_metric_and_component_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown recommendation strategy 'magic'"):
        parse_recommend_params({"strategy": "magic"})
    with pytest.raises(ConfigError, match="unknown similarity metric 'jaccard'"):
        parse_recommend_params({"content": {"metric": "jaccard"}})
    with pytest.raises(ConfigError, match="unknown component"):
        parse_recommend_params({"hybrid": {"weights": {"model": 1, "vibes": 1}}})
    with pytest.raises(ConfigError, match="unknown modality"):
        parse_recommend_params({"content": {"modalities": ["smell"]}})
    with pytest.raises(ConfigError, match="unknown recommendation strategy"):
        StrategyScorer(model(), "magic")
    with pytest.raises(ConfigError, match="unknown similarity metric"):
        content("manhattan")
    (tmp_path / "params.yaml").write_text("recommend:\n  strategy: nope\n")
    with pytest.raises(ConfigError, match=r"params.yaml.*recommend.strategy.*unknown recommendation strategy"):
        load_params(tmp_path / "params.yaml")


def test_run_recommend_with_strategy_and_filters(tmp_path: Path):
    spec = load_dataset_spec(FIXTURES / "tiny" / "dataset.yaml")
    (tmp_path / "exclude.txt").write_text("i1\n")
    params = Params(recommend=RecommendParams(strategy="popularity", exclude_items_file="exclude.txt"))
    ctx = StageContext(spec=spec, params=params, workspace=tmp_path)
    summary = run_recommend(ctx, k=3, model=model())
    df = pd.read_parquet(ctx.paths.recommendations)
    assert summary["strategy"] == "popularity" and "i1" not in set(df.item_id)
    assert "strategy `popularity`" in (ctx.paths.reports / "recommendations.md").read_text()
    assert df[df.user_id == "u2"].item_id.tolist()[:2] == ["i0", "i2"]
    assert df[df.user_id == "u0"].item_id.tolist()[0] == "i2" and len(df[df.user_id == "u0"]) == 3


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_content_nan_rows_without_mask_are_missing_even_centred(metric):
    c = ContentScores({"text": TEXT}, {}, metric, centre=True)  # i5 is all NaN, no mask given
    s = c.score(TRAIN)
    assert np.isnan(s[:2, 5]).all() and np.isfinite(s[:2, :5]).all()


def test_threshold_does_not_cut_the_popularity_fallback():
    scorer = StrategyScorer(model(), "content", content=content(), threshold=0.5)
    s = scorer.score(np.array([0, 2]))
    assert np.isfinite(s[0]).sum() == 3  # u0: i0, i2, i3 have cos >= 0.5 with i0
    np.testing.assert_array_equal(s[1], [2, 1, 1, 0, 0, 0])  # u2 (no history): popularity, untouched
    assert np.isfinite(scorer.cold_user_scores()).all()
    assert np.isfinite(StrategyScorer(model(), "popularity", threshold=1).cold_user_scores()).sum() == 3
