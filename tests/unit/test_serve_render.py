"""Pre-rendered responses (mmrec/serve/render.py) and the per-state caches behind the fast path.

- `RankedItems` renders byte-for-byte the JSON that the per-request dicts used to give;
- the item-record cache lives in the serving state: a reload (new champion, new catalogue)
  serves the new titles at once; ids outside the catalogue are never kept;
- the derived matrices factor models keep for serving (fold-in system, item norms) follow a
  replaced item matrix;
- session/explain answer the same inline (small catalogues) and in the thread pool (large).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("orjson")
from fastapi.testclient import TestClient

from mmrec.serve.app import create_app
from mmrec.serve.catalog import Catalog
from mmrec.serve.render import ItemFragments, RankedItems, dumps
from mmrec.serve.settings import ServeSettings
from mmrec.serve.state import StateHolder
from tests.conftest import FIXTURES
from tests.serving import ListSource, tiny_frames, tiny_state

TINY = FIXTURES / "tiny" / "dataset.yaml"


@pytest.fixture(scope="module")
def state():
    return tiny_state(TINY)


def _reference(catalog: Catalog, pairs: list[tuple[str, float]], key: str) -> list[dict]:
    """What the API built per request before pre-rendering (one dict per item)."""
    described = catalog.describe([i for i, _ in pairs])
    return [
        {**d, "rank": r, key: round(float(s), 6)} for r, (d, (_, s)) in enumerate(zip(described, pairs, strict=True), 1)
    ]


@pytest.mark.parametrize("key", ["score", "similarity"])
def test_ranked_items_render_what_the_dicts_gave(state, key: str):
    pairs = [("i1", 0.123456789), ("i3", np.float32(0.5)), ("nope", -1e-7), ("i2", 3.0), ("i8", 12345.6789012)]
    items = RankedItems(state.item_json, pairs, key)
    reference = _reference(state.catalog, pairs, key)
    assert json.loads(dumps({"items": items})) == {"items": reference}
    assert (
        list(items) == reference and items == reference and items[-1] == reference[-1] and items[1:3] == reference[1:3]
    )
    assert json.loads(dumps({"items": RankedItems(state.item_json, [], key)})) == {"items": []}
    many = [(f"i{1 + r % 8}", 1.0 / (r + 1)) for r in range(100)]  # ranks up to MAX_K
    assert json.loads(dumps(RankedItems(state.item_json, many, key))) == _reference(state.catalog, many, key)


def test_item_records_are_kept_for_catalogue_items_only(state):
    fragments = ItemFragments(state.catalog)
    first = fragments["i1"]
    assert json.loads(first + b"}") == state.catalog.item("i1").to_dict()
    assert fragments["i1"] is first and len(fragments) == 1  # serialised once
    assert json.loads(fragments["not-an-item"] + b"}")["title"] == "not-an-item"
    assert len(fragments) == 1  # ids from outside the catalogue are not kept (the cache stays bounded)


def test_dumps_encodes_numpy_and_sets_and_refuses_the_unknown():
    assert json.loads(dumps({"a": np.float32(0.5), "b": np.int64(3), "c": {"y", "x"}, "d": np.arange(2)})) == {
        "a": 0.5,
        "b": 3,
        "c": ["x", "y"],
        "d": [0, 1],
    }
    with pytest.raises(TypeError, match="object"):
        dumps({"x": object()})


def test_reload_serves_the_new_catalogue_at_once(state):
    """The record cache belongs to the state: a reload starting from a new catalogue never shows old titles."""
    items, inter, root = tiny_frames(TINY)
    renamed = items.copy()
    renamed["text_title"] = "Renamed " + renamed["item_id"].astype(str)
    users = [u["user_id"] for u in state.catalog.users(limit=500)]
    v2 = dataclasses.replace(state, version="2", catalog=Catalog(renamed, inter, users=users, root=root))
    assert v2.item_json is not state.item_json and len(v2.item_json) == 0
    source = ListSource([state, v2])
    holder = StateHolder(source, interval_s=0)
    with TestClient(create_app(holder, ServeSettings(log_key="k"), poll=False), base_url="http://localhost") as c:
        for path in ("/users/u1/recommendations?k=2", "/items/i1/similar?k=3&modality=text"):
            before = c.get(path).json()
            assert before["version"] == "1" and not any(i["title"].startswith("Renamed") for i in before["items"])
        source.advance()
        assert c.post("/admin/reload", json={}).json()["action"] == "loaded"
        for path in ("/users/u1/recommendations?k=2", "/items/i1/similar?k=3&modality=text"):
            after = c.get(path).json()
            assert after["version"] == "2" and all(i["title"] == f"Renamed {i['item_id']}" for i in after["items"])
        session = c.post("/recommendations", json={"item_ids": ["i1"], "k": 2}).json()
        assert all(i["title"].startswith("Renamed") for i in session["items"])


def test_session_and_explain_answer_the_same_inline_and_in_the_thread_pool(state):
    answers = []
    for limit in (10**6, 0):  # the tiny model's 8 items: inline, then always offloaded
        holder = StateHolder(ListSource([state]), interval_s=0)
        with TestClient(
            create_app(holder, ServeSettings(log_key="k", inline_max_items=limit), poll=False),
            base_url="http://localhost",
        ) as c:
            answers.append(
                (
                    c.post("/recommendations", json={"item_ids": ["i1", "i2"], "k": 3}).json(),
                    c.get("/users/u1/recommendations/i5/explain").json(),
                    c.post("/recommendations", json={"item_ids": ["zzz"]}).status_code,
                )
            )
    assert answers[0] == answers[1] and answers[0][0]["items"] and answers[0][2] == 404


def test_factor_models_rebuild_their_serving_caches_when_the_item_matrix_changes():
    """score_history and item_affinity reuse the fold-in system and item norms until item_factors is replaced."""
    import scipy.sparse as sp

    from mmrec.data.interactions import Interactions
    from mmrec.models import create_model

    rng = np.random.default_rng(0)
    m = (rng.random((30, 20)) < 0.2).astype(np.float32)
    data = Interactions(
        sp.csr_matrix(m), np.arange(30).astype(str).astype(object), np.arange(20).astype(str).astype(object)
    )
    model = create_model("bpr", dim=4, max_epochs=2, batch_size=64).fit(data)
    history = [np.flatnonzero(m[0]), [1, 2]]

    def fresh(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The per-request computation without any cache (what _fold_in did before)."""
        q64 = q.astype(np.float64)
        gram = q64.T @ q64
        lam = model.fold_in_reg * max(float(np.trace(gram)) / gram.shape[0], 1e-6)
        rows = model.history_rows(history)
        p = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), np.asarray(rows @ q64).T).T
        norms = np.linalg.norm(q, axis=1) + 1e-12
        return p @ q.T, (q[[1, 2]] @ q[0]) / (norms[[1, 2]] * norms[0])

    for _ in range(2):  # the second call is served from the cache
        scores, affinity = fresh(model.item_factors)
        assert np.allclose(model.score_history(history), scores, atol=1e-5)
        assert np.allclose(model.item_affinity(0, np.asarray([1, 2])), affinity, atol=1e-6)
    old = model.score_history(history)
    model.item_factors = model.item_factors[::-1].copy() * 2.0  # as a reload or refit replaces it
    scores, affinity = fresh(model.item_factors)
    assert np.allclose(model.score_history(history), scores, atol=1e-5) and not np.allclose(scores, old, atol=1e-3)
    assert np.allclose(model.item_affinity(0, np.asarray([1, 2])), affinity, atol=1e-6)


def test_explain_id_lookup_follows_a_replaced_id_array():
    """explain() maps ids to positions through a cached dict, rebuilt for every new ids array."""
    from mmrec.errors import NotFoundError
    from mmrec.explain import _index

    ids = np.asarray(["a", "b", "c", "b"], dtype=object)
    assert [_index(ids, k, "user") for k in ("a", "b", "c")] == [0, 1, 2]  # first occurrence, as before
    other = np.asarray(["c", "a"], dtype=object)
    assert _index(other, "a", "user") == 1 and _index(ids, "a", "user") == 0
    with pytest.raises(NotFoundError, match="unknown item id 'z'"):
        _index(other, "z", "item")
    with pytest.raises(NotFoundError):
        _index(None, "a", "user")
