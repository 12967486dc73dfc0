"""Explanations: contributions that sum to the score, supporting items that are the real terms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.errors import NotFoundError
from mmrec.explain import explain, format_explanation, item_titles
from mmrec.models import create_model

# 3 users x 4 items. Item-item cosine co-occurrence is easy to check by hand.
TRAIN = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [0, 0, 1, 1],
    ],
    np.float32,
)


def interactions() -> Interactions:
    return Interactions(sp.csr_matrix(TRAIN), np.array(["a", "b", "c"], object), np.array(["w", "x", "y", "z"], object))


def test_itemknn_supporting_items_are_the_score_terms():
    model = create_model("itemknn", k=10).fit(interactions())
    exp = explain(model, "a", "y")
    # user a saw w and x; y co-occurs once with each: cosine = 1/sqrt(2*2) for both
    assert exp["score"] == pytest.approx(2 * 0.5, rel=1e-5)
    assert [s["item_id"] for s in exp["supporting_items"]] == ["w", "x"]
    assert [s["affinity"] for s in exp["supporting_items"]] == pytest.approx([0.5, 0.5])
    assert exp["contributions"] == {"collaborative": pytest.approx(1.0, rel=1e-5)}
    assert exp["rank"] == 1 and exp["already_seen"] is False and exp["history_size"] == 2


def test_popularity_is_explained_as_popularity():
    model = create_model("popularity").fit(interactions())
    exp = explain(model, "c", "x")
    assert exp["contributions"] == {"popularity": 2.0}
    assert exp["supporting_items"] == []


def test_unknown_ids_are_not_found():
    model = create_model("popularity").fit(interactions())
    with pytest.raises(NotFoundError, match="unknown user id 'nobody'"):
        explain(model, "nobody", "x")
    with pytest.raises(NotFoundError, match="unknown item id 'q'") as err:
        explain(model, "a", "q")
    assert err.value.kind == "item" and err.value.key == "q"


def test_seen_item_and_text_format():
    model = create_model("itemknn", k=10).fit(interactions())
    exp = explain(model, "a", "w")
    assert exp["already_seen"] and exp["rank"] is None
    assert all(s["item_id"] != "w" for s in exp["supporting_items"])
    text = format_explanation(exp, {"w": "Widget"})
    assert "w (Widget)" in text and "already in the user's history" in text


def test_item_titles_prefers_title_then_first_text_field():
    import pandas as pd

    frame = pd.DataFrame({"item_id": ["1", "2"], "text_genres": ["a", "b"], "text_title": ["T1", None]})
    assert item_titles(frame) == {"1": "T1", "2": ""}
    assert item_titles(frame.drop(columns="text_title")) == {"1": "a", "2": "b"}
    assert item_titles(frame[["item_id"]]) == {}


def test_factor_model_fold_in_matches_a_trained_user():
    """Folding in a training user's own history recovers much of their trained ranking."""
    rng = np.random.default_rng(0)
    m = (rng.random((60, 40)) < 0.15).astype(np.float32)
    data = Interactions(
        sp.csr_matrix(m), np.arange(60).astype(str).astype(object), np.arange(40).astype(str).astype(object)
    )
    model = create_model("bpr", dim=8, max_epochs=20, batch_size=64, lr=0.05).fit(data)
    users = np.arange(10)
    trained = model.score(users)
    folded = model.score_history([np.flatnonzero(m[u]) for u in users])
    corr = [np.corrcoef(trained[i], folded[i])[0, 1] for i in range(len(users))]
    assert np.mean(corr) > 0.5, corr
