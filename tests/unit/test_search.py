"""Cross-modal search: the two-tower's persisted projection, ranking, query validation.

Planted data: 4 taste groups; an item's text and image vectors are its group's centroid (one per
modality, unrelated between modalities) plus independent noise plus a shared offset. Only the
alignment term can learn that text centroid g and image centroid g mean the same thing, so a
text query finding same-group items by their images is owed to the learned projection.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.models import create_model, load_model
from mmrec.models.item_features import with_features
from mmrec.models.projection import CrossModalProjection, ModalityProjection
from mmrec.search import (
    NoProjection,
    QueryEncoders,
    QueryError,
    check_text_query,
    decode_query_image,
    evaluate_title_search,
    rank,
    recall_at_k,
    search,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_GROUPS, PER_GROUP, COLD = 4, 30, 10
TT = {
    "dim": 16,
    "hidden": 32,
    "input_dim": 8,
    "lr": 0.01,
    "batch_size": 128,
    "max_epochs": 30,
    "patience": 5,
    "align_weight": 0.5,
}


def planted(text_dim: int = 32, image_dim: int = 16, seed: int = 0):
    """(train with text+image features, valid, raw features, masks, cold item rows)."""
    rng = np.random.default_rng(seed)
    n_items, n_users = N_GROUPS * PER_GROUP, N_GROUPS * 20
    group = np.repeat(np.arange(N_GROUPS), PER_GROUP)
    cold = np.concatenate([g * PER_GROUP + np.arange(PER_GROUP - COLD, PER_GROUP) for g in range(N_GROUPS)])
    feats, masks = {}, {}
    for m, d in (("text", text_dim), ("image", image_dim)):
        x = 5.0 * rng.normal(size=d) + 2.0 * rng.normal(size=(N_GROUPS, d))[group] + 0.5 * rng.normal(size=(n_items, d))
        feats[m], masks[m] = x.astype(np.float32), np.ones(n_items, bool)
    masks["image"][[0, 45]] = False  # two items without a picture
    feats["image"][[0, 45]] = 0.0
    train, valid = np.zeros((n_users, n_items), np.float32), np.zeros((n_users, n_items), np.float32)
    for u in range(n_users):
        g = u // 20
        warm = g * PER_GROUP + rng.choice(PER_GROUP - COLD, size=10, replace=False)
        train[u, warm[:8]], valid[u, warm[8:]] = 1, 1
    data = Interactions(
        sp.csr_matrix(train),
        np.arange(n_users).astype(str).astype(object),
        np.asarray([f"i{i}" for i in range(n_items)], dtype=object),
    )
    return with_features(data, feats, masks), sp.csr_matrix(valid), feats, masks, cold


@pytest.fixture(scope="module")
def fitted():
    train, valid, feats, masks, cold = planted()
    import torch

    torch.set_num_threads(1)
    return create_model("two_tower", **TT).fit(train, valid), feats, masks, cold


def test_projection_replays_training_inputs_and_survives_save_load(fitted, tmp_path):
    model, feats, masks, _ = fitted
    proj = model.projection
    assert isinstance(proj, CrossModalProjection) and set(proj.modalities) == {"text", "image"}
    for m in ("text", "image"):
        # the frozen input steps + head on the raw features give the exported item vectors
        again = proj.project(m, feats[m][masks[m]])
        np.testing.assert_allclose(again, proj.item_vectors[m][masks[m]], atol=1e-4)
        assert not proj.item_vectors[m][~masks[m]].any()
    loaded = load_model(model.save(tmp_path / "tt"))
    assert loaded.projection is not None
    for m in ("text", "image"):
        np.testing.assert_array_equal(loaded.projection.item_vectors[m], proj.item_vectors[m])
        np.testing.assert_array_equal(loaded.projection.item_masks[m], proj.item_masks[m])
        np.testing.assert_allclose(loaded.projection.project(m, feats[m][:5]), proj.project(m, feats[m][:5]), atol=1e-6)


def test_text_queries_find_items_by_their_images_better_than_a_random_projection(fitted):
    model, feats, masks, cold = fitted
    everything = np.arange(len(model.item_ids))
    result = evaluate_title_search(model.projection, feats["text"][cold], feats, masks, cold, everything, k=10)
    r = result.recall
    # same group is all the data can tell: perfect alignment finds the item ~10/30 of the time,
    # chance 10/118
    assert result.n_candidates == 118 and result.n_queries == len(cold)
    assert r["cross_modal"] > 0.2, r
    assert r["cross_modal"] > r["random_projection"] + 0.1, r
    assert r["text_only"] == 1.0  # the query is the item's own text vector: the baseline sees it


def test_projection_rejects_wrong_width_and_unknown_modality(fitted):
    proj = fitted[0].projection
    from mmrec.errors import ModelError

    with pytest.raises(ModelError, match=r"expects \(n, 32\)"):
        proj.project("text", np.zeros((1, 7), np.float32))
    with pytest.raises(ModelError, match="no cross-modal projection for 'audio'"):
        proj.project("audio", np.zeros((1, 7), np.float32))


def test_models_without_a_joint_space_say_so():
    train, valid, *_ = planted()
    bpr = create_model("bpr", dim=4, max_epochs=1).fit(train, valid)
    with pytest.raises(NoProjection, match="no cross-modal projection"):
        search(bpr, QueryEncoders(None), 5, text="anything")


def hand_projection() -> CrossModalProjection:
    ident = ModalityProjection(
        mean=np.zeros(2, np.float32),
        pca_mean=None,
        components=None,
        w1=np.eye(2, dtype=np.float32),
        b1=np.zeros(2, np.float32),
    )
    vectors = {
        "text": np.asarray([[1, 0], [0, 1], [0.6, 0.8]], np.float32),
        "image": np.asarray([[0, 1], [0, 0], [0.8, 0.6]], np.float32),
    }
    masks = {"text": np.asarray([True, True, True]), "image": np.asarray([True, False, True])}
    return CrossModalProjection({"text": ident, "image": ident}, vectors, masks)


def test_rank_by_target_with_hand_computed_scores():
    proj, ids, q = hand_projection(), ["a", "b", "c"], np.asarray([[1.0, 0.0]])
    # image only: a . q = 0, c . q = 0.8, b has no image and is left out
    hits = rank(proj, q, ids, 10, target="image")
    assert [(h.item_id, round(h.score, 6)) for h in hits] == [("c", 0.8), ("a", 0.0)]
    # all: mean over the modalities each item has: a (1+0)/2, b 0 (text only), c (0.6+0.8)/2
    hits = rank(proj, q, ids, 10, target="all")
    assert [(h.item_id, round(h.score, 6)) for h in hits] == [("c", 0.7), ("a", 0.5), ("b", 0.0)]
    assert hits[0].matched == pytest.approx({"text": 0.6, "image": 0.8})
    assert [h.item_id for h in rank(proj, q, ids, 1, target="text")] == ["a"]
    with pytest.raises(QueryError, match="unknown target"):
        rank(proj, q, ids, 3, target="audio")


def test_recall_at_k_counts_ties_against_the_true_item():
    items = np.asarray([[1, 0], [0, 1], [1, 0]], np.float32)
    queries = np.asarray([[1, 0], [0, 1]], np.float32)
    assert recall_at_k(queries, items, np.asarray([0, 1]), k=1) == 0.5  # item 2 ties item 0
    assert recall_at_k(queries, items, np.asarray([0, 1]), k=2) == 1.0


@pytest.mark.parametrize(
    "bad, message",
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("x" * 201, "above the limit of 200"),
        ("a\x00b", "control characters"),
        (3, "must be text"),
    ],
)
def test_bad_text_queries(bad, message):
    with pytest.raises(QueryError, match=message):
        check_text_query(bad, max_chars=200)


def png(width: int = 8, height: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_image_uploads_are_validated_before_decoding():
    ok = decode_query_image(png(), "image/png", 10_000, 1_000)
    assert ok.size == (8, 8) and ok.mode == "RGB"
    with pytest.raises(QueryError, match="unsupported Content-Type 'text/plain'"):
        decode_query_image(png(), "text/plain", 10_000, 1_000)
    with pytest.raises(QueryError, match="above the limit of 20"):
        decode_query_image(png(), "image/png", 20, 1_000)
    with pytest.raises(QueryError, match="not a recognised image"):
        decode_query_image(b"GIF89a but not really" * 3, "image/gif", 10_000, 1_000)
    with pytest.raises(QueryError, match=r"corrupt|truncated"):
        decode_query_image(png(64, 64)[:80], "image/png", 10_000, 10_000)
    with pytest.raises(QueryError, match="decompression-bomb guard"):
        decode_query_image(png(40, 40), "image/png", 10_000, 1_000)
    with pytest.raises(QueryError, match="empty upload"):
        decode_query_image(b"", "image/png", 10_000, 1_000)


def tiny_encoders() -> QueryEncoders:
    from mmrec.encoders.config import ExtractParams

    return QueryEncoders(
        ExtractParams.model_validate(
            {"text": {"encoder": "tiny_text"}, "image": {"encoder": "tiny_cnn"}, "device": "cpu"}
        )
    )


def test_search_embeds_text_and_images_with_the_dataset_encoders(fitted):
    model = fitted[0]
    encoders = tiny_encoders()
    assert encoders.encoder("text") is encoders.encoder("text")  # built once
    hits = search(model, encoders, 5, text="a red poster", target="image")
    assert len(hits) == 5 and all(set(h.matched) == {"image"} for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    from PIL import Image

    hits = search(model, encoders, 3, image=Image.new("RGB", (20, 20), (0, 0, 255)), target="text")
    assert len(hits) == 3 and all(set(h.matched) == {"text"} for h in hits)
    with pytest.raises(QueryError, match="not both"):
        search(model, encoders, 3)


def test_search_command_with_a_saved_model(fitted, tiny_dataset, tmp_path):
    import json

    from typer.testing import CliRunner

    from mmrec.cli import app

    model_dir = fitted[0].save(tmp_path / "tt")
    params = tmp_path / "params.yaml"
    params.write_text("extract:\n  device: cpu\n  text: {encoder: tiny_text}\n  image: {encoder: tiny_cnn}\n")
    common = [
        "search",
        "--dataset",
        str(tiny_dataset),
        "--params",
        str(params),
        "--workspace",
        str(tmp_path),
        "--model",
        str(model_dir),
    ]
    runner = CliRunner()
    result = runner.invoke(app, [*common, "a red poster", "--k", "4", "--target", "image", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert len(body["items"]) == 4 and all(set(i["matched"]) == {"image"} for i in body["items"])
    image = tmp_path / "q.png"
    image.write_bytes(png(16, 16))
    result = runner.invoke(app, [*common, "--image", str(image), "--k", "2"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 3  # a header line and two results
    for bad, message in (
        (["--k", "2"], "give a text query or --image"),
        (["  "], "query is empty"),
        (["--image", str(tmp_path / "missing.png")], "no such image file"),
    ):
        result = runner.invoke(app, [*common, *bad])
        assert result.exit_code == 2 and message in result.output, result.output


def test_search_model_falls_back_to_the_declared_alias_only_when_configured(fitted, monkeypatch):
    from types import SimpleNamespace

    import mmrec.tracking.registry
    from mmrec.serve.search_api import SearchModels

    joint = fitted[0]
    train, valid, *_ = planted()
    bpr = create_model("bpr", dim=4, max_epochs=1).fit(train, valid)
    holder = SimpleNamespace(source=SimpleNamespace(ctx=object()))
    state = SimpleNamespace(model=bpr, version="7")
    with pytest.raises(NoProjection, match="the champion \\(bpr\\) has no cross-modal projection"):
        SearchModels(holder, None).get(state)  # type: ignore[arg-type]
    loads = []
    monkeypatch.setattr(mmrec.tracking.registry, "alias_version", lambda ctx, alias: "3" if alias == "search" else None)
    monkeypatch.setattr(mmrec.tracking.registry, "load_champion", lambda ctx, alias: loads.append(alias) or (joint, {}))
    models = SearchModels(holder, "search")  # type: ignore[arg-type]
    model, info = models.get(state)
    assert model is joint and info == {"name": "two_tower", "version": "3", "source": "search"}
    models.get(state)
    assert loads == ["search"]  # loaded once per registry version
    assert SearchModels(holder, "search").get(SimpleNamespace(model=joint, version="9"))[1]["source"] == "champion"  # type: ignore[arg-type]
    with pytest.raises(NoProjection, match="no model has the alias 'other'"):
        SearchModels(holder, "other").get(state)  # type: ignore[arg-type]
