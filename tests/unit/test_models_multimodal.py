"""Multimodal models on tiny synthetic data where content predicts behaviour.

4 taste groups of 30 items; an item's text and image vectors are its group's centroid plus noise
plus a large offset every item shares (which mean-centring must remove). Each user stays inside
one group. 10 items per group never occur in training (cold): only content can rank them.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.encoders.config import ExtractParams
from mmrec.encoders.store import write_features
from mmrec.errors import DataError, ModelError
from mmrec.evaluate import evaluate_scores
from mmrec.models import create_model, load_model
from mmrec.models.content_knn import fused_similarity
from mmrec.models.item_features import centred_unit, load_item_features, with_features
from mmrec.paths import DatasetPaths

N_GROUPS, PER_GROUP, COLD_PER_GROUP, USERS_PER_GROUP = 4, 30, 10, 20
K = 5

VBPR_FAST = {"dim": 8, "content_dim": 8, "lr": 0.03, "batch_size": 128, "max_epochs": 40, "patience": 5}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted(seed: int = 0, image_missing: float = 0.0):
    """(train Interactions with text+image features, valid, cold_test, cold item indices)."""
    rng = np.random.default_rng(seed)
    n_items, n_users = N_GROUPS * PER_GROUP, N_GROUPS * USERS_PER_GROUP
    item_group = np.repeat(np.arange(N_GROUPS), PER_GROUP)
    cold = np.concatenate([g * PER_GROUP + np.arange(PER_GROUP - COLD_PER_GROUP, PER_GROUP) for g in range(N_GROUPS)])
    feats, masks = {}, {}
    for modality, dim, noise in (("text", 16, 0.5), ("image", 8, 0.8)):
        centroids = rng.normal(size=(N_GROUPS, dim))
        offset = 5.0 * rng.normal(size=dim)  # shared by every item: centring has to remove it
        x = offset + centroids[item_group] + noise * rng.normal(size=(n_items, dim))
        feats[modality] = x.astype(np.float32)
        masks[modality] = np.ones(n_items, bool)
    if image_missing:
        gone = rng.random(n_items) < image_missing
        feats["image"][gone] = 0.0
        masks["image"] = ~gone
    train = np.zeros((n_users, n_items), np.float32)
    valid = np.zeros_like(train)
    cold_test = np.zeros_like(train)
    for u in range(n_users):
        g = u // USERS_PER_GROUP
        warm = g * PER_GROUP + rng.choice(PER_GROUP - COLD_PER_GROUP, size=10, replace=False)
        train[u, warm[:8]] = 1
        valid[u, warm[8:]] = 1
        cold_test[u, g * PER_GROUP + PER_GROUP - COLD_PER_GROUP + rng.choice(COLD_PER_GROUP, 3, replace=False)] = 1
    data = Interactions(
        sp.csr_matrix(train),
        np.arange(n_users).astype(str).astype(object),
        np.arange(n_items).astype(str).astype(object),
    )
    return with_features(data, feats, masks), sp.csr_matrix(valid), sp.csr_matrix(cold_test), cold


def recall(model, target, train, candidates=None) -> float:
    return evaluate_scores(model.score, target, exclude=train.matrix, ks=(K,), candidates=candidates)[f"recall@{K}"]


MMG_FAST = {"dim": 16, "knn_k": 5, "lr": 0.02, "batch_size": 128, "max_epochs": 40, "patience": 5}
TT_FAST = {"dim": 16, "hidden": 32, "lr": 0.01, "batch_size": 128, "max_epochs": 40, "patience": 5}
MODELS = [
    ("content_knn", {"k": 20}),
    ("content_knn", {"k": 0}),
    ("vbpr", VBPR_FAST),
    ("two_tower", TT_FAST),
    ("two_tower", {**TT_FAST, "fusion": "concat", "loss": "infonce"}),
    ("mm_graph", MMG_FAST),
    ("mm_graph", {**MMG_FAST, "cold_vectors": "neighbours"}),
]


@pytest.mark.parametrize(("name", "params"), MODELS)
def test_beats_random_on_warm_and_cold_items(name, params):
    train, valid, cold_test, cold = planted()
    model = create_model(name, **params).fit(train, valid)
    warm_candidates = np.setdiff1d(np.arange(train.n_items), cold)
    r_warm = recall(model, valid, train, warm_candidates)
    r_cold = recall(model, cold_test, train, cold)
    random_warm = K / (len(warm_candidates) - 8)
    random_cold = K / len(cold)
    assert r_warm > 4 * random_warm, (r_warm, random_warm)
    assert r_cold > 3 * random_cold, (r_cold, random_cold)


@pytest.mark.parametrize(("name", "params"), MODELS)
def test_cold_items_are_recommended_and_personalised(name, params):
    train, valid, _, cold = planted()
    model = create_model(name, **params).fit(train, valid)
    scores = model.score(np.arange(train.n_users), cold)
    assert np.isfinite(scores).all()
    top = cold[np.argmax(scores, axis=1)]
    # each user's best cold item is from their own group: content carries the taste over
    user_group = np.arange(train.n_users) // USERS_PER_GROUP
    assert (top // PER_GROUP == user_group).mean() > 0.9
    if name == "content_knn":
        recs, _ = model.recommend(np.arange(train.n_users), k=10)
        assert np.isin(recs, cold).any(axis=1).mean() > 0.9  # cold items compete with warm ones


def test_content_knn_handles_missing_image_rows():
    train, valid, cold_test, cold = planted(image_missing=0.3)
    model = create_model("content_knn", k=20).fit(train, valid)
    missing = np.flatnonzero(~train.feature_masks["image"])
    assert len(missing) > 10
    # an item without a poster still has neighbours, compared on text, mostly in its own group
    sim = model.similarity
    rows = sim[missing]
    assert (np.diff(rows.indptr) > 0).all()
    same = (rows.indices // PER_GROUP) == np.repeat(missing // PER_GROUP, np.diff(rows.indptr))
    assert same.mean() > 0.8
    assert recall(model, cold_test, train, cold) > 3 * K / len(cold)


def test_fused_similarity_ignores_the_absent_modality():
    text = centred_unit(np.array([[1, 0], [1, 0.1], [0, 1]], np.float32), np.ones(3, bool))
    image = np.array([[1, 0], [0, 0], [0, 1]], np.float32)  # item 1 has no image
    mask = np.array([True, False, True])
    sim = fused_similarity([(text, np.ones(3, bool), 1.0), (image, mask, 1.0)], k=2).toarray()
    # items 0 and 1 share only text: their similarity is the text cosine, not halved by a zero image
    assert sim[0, 1] == pytest.approx(float(text[0] @ text[1]), rel=1e-5)
    assert sim[0, 0] == 0.0


@pytest.mark.parametrize(("name", "params"), MODELS[2:])
def test_trained_models_handle_missing_image_rows(name, params):
    train, valid, cold_test, cold = planted(image_missing=0.3)
    model = create_model(name, **params).fit(train, valid)
    scores = model.score(np.arange(train.n_users))
    assert np.isfinite(scores).all()
    assert recall(model, cold_test, train, cold) > 3 * K / len(cold)


@pytest.mark.parametrize(("name", "params"), MODELS[3:])
def test_joint_models_are_deterministic(name, params):
    train, valid, _, _ = planted(image_missing=0.2)
    a = create_model(name, **{**params, "max_epochs": 3}).fit(train, valid)
    b = create_model(name, **{**params, "max_epochs": 3}).fit(train, valid)
    np.testing.assert_array_equal(a.score(np.arange(5)), b.score(np.arange(5)))


def test_two_tower_rejects_a_modality_no_item_has():
    train, valid, _, _ = planted()
    masks = {**train.feature_masks, "image": np.zeros(train.n_items, bool)}
    empty = with_features(train, train.features, masks)
    with pytest.raises(ModelError, match="no item has a image vector"):
        create_model("two_tower", **TT_FAST).fit(empty, valid)
    with pytest.raises(ModelError, match="fusion"):
        create_model("two_tower", fusion="attention-ish")
    with pytest.raises(ModelError, match="loss"):
        create_model("two_tower", loss="hinge")


def test_mm_graph_cold_items_are_built_from_warm_neighbours():
    from mmrec.models.mm_graph import MMGraph

    train, _, _, cold = planted()
    graphs = MMGraph(knn_k=5).item_graphs(train)
    fused = sum(graphs.values())
    # every row (cold ones included) is a distribution over warm items only
    np.testing.assert_allclose(np.asarray(fused.sum(axis=1)).ravel(), 1.0, rtol=1e-5)
    assert not np.isin(fused.indices, cold).any()
    assert (fused.diagonal() == 0).all()


def test_mm_graph_ridge_cold_vectors_are_the_content_map_of_the_warm_vectors():
    train, valid, _, cold = planted()
    model = create_model("mm_graph", **MMG_FAST, cold_ridge=2.0).fit(train, valid)
    warm = np.setdiff1d(np.arange(train.n_items), cold)
    f = np.hstack([centred_unit(train.features[m], train.feature_masks[m]) for m in ("text", "image")])
    degree = np.asarray(train.matrix.sum(axis=0)).ravel()
    d = np.diag(np.log1p(degree[warm]))
    fw = f[warm].astype(np.float64)
    mapping = np.linalg.solve(fw.T @ d @ fw + 2.0 * np.eye(f.shape[1]), fw.T @ d @ model.item_factors[warm])
    np.testing.assert_allclose(model.item_factors[cold], f[cold] @ mapping, rtol=1e-4, atol=1e-5)
    # each modality's part is its own features' share of the map
    text = f.shape[1] - train.features["image"].shape[1]
    np.testing.assert_allclose(model.item_parts["text"][cold], f[cold][:, :text] @ mapping[:text], rtol=1e-4, atol=1e-5)


def test_mm_graph_cold_settings_are_checked():
    with pytest.raises(ModelError, match="cold_vectors"):
        create_model("mm_graph", cold_vectors="mean")
    with pytest.raises(ModelError, match="cold_ridge"):
        create_model("mm_graph", cold_ridge=0.0)


def test_vbpr_scores_cold_items_from_content_only():
    train, valid, _, cold = planted()
    model = create_model("vbpr", **VBPR_FAST).fit(train, valid)
    d = model.dim
    # collaborative factors and id biases of cold items are zero: nothing was learned for them
    assert not model.item_factors[cold, :d].any()
    assert np.abs(model.item_factors[cold, d:]).sum() > 0


@pytest.mark.parametrize(("name", "params"), MODELS)
def test_needs_its_modalities(name, params):
    train, valid, _, _ = planted()
    text_only = with_features(train, {"text": train.features["text"]}, {"text": train.feature_masks["text"]})
    with pytest.raises(DataError, match="'image' item features"):
        create_model(name, **params).fit(text_only, valid)
    # a single-modality configuration trains on the text alone
    model = create_model(name, **{**params, "modalities": ["text"]}).fit(text_only, valid)
    assert model.score(np.arange(3)).shape == (3, train.n_items)


@pytest.mark.parametrize("name", ["content_knn", "vbpr", "two_tower", "mm_graph"])
def test_bad_modalities_are_rejected(name):
    with pytest.raises(ModelError, match="modalities"):
        create_model(name, modalities=["smell"])
    with pytest.raises(ModelError, match="modalities"):
        create_model(name, modalities=[])


def test_content_knn_bad_weights():
    with pytest.raises(ModelError, match="weights"):
        create_model("content_knn", weights={"audio": 1.0})
    with pytest.raises(ModelError, match="weights"):
        create_model("content_knn", weights={"text": 0.0, "image": 0.0})


def test_content_knn_weights_change_the_fusion():
    train, _, _, _ = planted()
    text_only = create_model("content_knn", k=20, weights={"text": 1.0, "image": 0.0}).fit(train)
    fused = create_model("content_knn", k=20).fit(train)
    assert (text_only.similarity != fused.similarity).nnz > 0


@pytest.mark.parametrize(("name", "params"), MODELS)
def test_save_load_round_trip(tmp_path, name, params):
    train, valid, _, _ = planted()
    model = create_model(name, **params).fit(train, valid)
    model.save(tmp_path / name)
    back = load_model(tmp_path / name)
    users = np.arange(train.n_users)
    np.testing.assert_allclose(back.score(users), model.score(users), rtol=1e-6)
    assert back.get_params() == model.get_params()


def test_vbpr_is_deterministic():
    train, valid, _, _ = planted()
    a = create_model("vbpr", **{**VBPR_FAST, "max_epochs": 3}).fit(train, valid)
    b = create_model("vbpr", **{**VBPR_FAST, "max_epochs": 3}).fit(train, valid)
    np.testing.assert_array_equal(a.score(np.arange(5)), b.score(np.arange(5)))


def test_users_without_history_get_popularity():
    train, _, _, _ = planted()
    m = train.matrix.tolil()
    m[0, :] = 0
    train = Interactions(sp.csr_matrix(m), train.user_ids, train.item_ids, train.features, train.feature_masks)
    model = create_model("content_knn").fit(train)
    pop = np.asarray(train.matrix.sum(axis=0)).ravel()
    np.testing.assert_allclose(model.score(np.array([0]))[0], pop)


def test_with_features_checks_shapes():
    train, _, _, _ = planted()
    with pytest.raises(DataError, match="aligned with the item index"):
        with_features(train, {"text": np.zeros((3, 4), np.float32)})


def test_load_item_features_aligns_and_masks(tmp_path):
    paths = DatasetPaths("toy", tmp_path)
    extract = ExtractParams.model_validate({"text": {"encoder": "tiny_text"}, "image": {"encoder": "tiny_cnn"}})
    vecs = np.array([[1, 2], [3, 4]], np.float32)
    write_features(paths.features("text", "tiny_text"), ["b", "a"], vecs, {"dim": 2})
    feats, masks = load_item_features(paths, extract, np.array(["a", "b", "c"], dtype=object))
    assert set(feats) == {"text"}  # no image file: left out when not asked for
    np.testing.assert_array_equal(feats["text"], [[3, 4], [1, 2], [0, 0]])
    np.testing.assert_array_equal(masks["text"], [True, True, False])
    with pytest.raises(DataError, match="extract_image"):
        load_item_features(paths, extract, ["a"], modalities=["image"])


def test_vbpr_id_dropout_learns_and_is_deterministic():
    train, valid, cold_test, cold = planted()
    params = {**VBPR_FAST, "id_dropout": 0.5}
    a = create_model("vbpr", **params).fit(train, valid)
    assert recall(a, cold_test, train, cold) > 3 * K / len(cold)
    b = create_model("vbpr", **{**params, "max_epochs": a.epochs, "patience": 100}).fit(train, valid)
    c = create_model("vbpr", **{**params, "max_epochs": a.epochs, "patience": 100}).fit(train, valid)
    np.testing.assert_array_equal(b.score(np.arange(5)), c.score(np.arange(5)))
    with pytest.raises(ModelError, match="id_dropout"):
        create_model("vbpr", id_dropout=1.0)


def test_modalities_of_models():
    from mmrec.models.item_features import modalities_of

    assert modalities_of(create_model("vbpr", modalities=["image"])) == ("image",)
    assert modalities_of(create_model("content_knn")) == ("text", "image")
    assert modalities_of(create_model("bpr")) == ()


@pytest.mark.parametrize(("name", "params"), MODELS[2:])
def test_score_parts_sum_to_the_score(name, params):
    train, valid, _, cold = planted()
    model = create_model(name, **params).fit(train, valid)
    for user, item in [(0, 3), (5, int(cold[0])), (41, 70)]:
        parts = model.score_parts(user, item)
        assert set(parts) >= {"collaborative", "text", "image"}
        assert sum(parts.values()) == pytest.approx(float(model.score([user], [item])[0, 0]), rel=1e-4, abs=1e-5)
    # a cold item has no collaborative signal: its score is content only
    if name != "vbpr":
        assert model.score_parts(0, int(cold[0]))["collaborative"] == pytest.approx(0.0, abs=1e-6)
    back_parts = None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp + "/m")
        back_parts = load_model(tmp + "/m").score_parts(0, 3)
    assert back_parts == pytest.approx(model.score_parts(0, 3))


@pytest.mark.parametrize(
    ("name", "params"), [*MODELS, ("bpr", {"dim": 8, "batch_size": 128, "max_epochs": 30, "lr": 0.05})]
)
def test_new_user_from_a_few_items(name, params):
    """A user unknown to the model, given 5 of a group's items, gets that group's items."""
    train, valid, _, cold = planted()
    model = create_model(name, **params).fit(train, valid)
    histories = [list(range(g * PER_GROUP, g * PER_GROUP + 5)) for g in range(N_GROUPS)]
    scores = model.score_history(histories)
    assert scores.shape == (N_GROUPS, train.n_items)
    warm = np.setdiff1d(np.arange(train.n_items), cold)
    for g, hist in enumerate(histories):
        s = scores[g].copy()
        s[hist] = -np.inf
        top = warm[np.argsort(-s[warm])[:10]]
        assert (top // PER_GROUP == g).mean() >= 0.8, (name, g, top)
    empty = model.score_history([[]])
    np.testing.assert_allclose(empty[0], np.asarray(train.matrix.sum(axis=0)).ravel())
    with pytest.raises(ModelError, match="outside"):
        model.score_history([[train.n_items]])
