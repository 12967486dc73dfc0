"""Every registered model behind the one contract: registry, shapes, seeds, save/load, masking.

The contract tests are parametrised over `available_models()`, so a newly registered model is
held to them automatically: it only has to add its tiny configuration to `CONTRACT` (a test fails
until it does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.errors import ModelError
from mmrec.models import available_models, create_model, load_model
from mmrec.models.item_features import with_features

# Tiny configs: every model trains in well under a second on the matrix below.
TINY = {
    "itemknn": {"k": 5},
    "bpr": {"dim": 8, "lr": 0.05, "batch_size": 16, "max_epochs": 6, "eval_every": 2, "patience": 2},
    "lightgcn": {"dim": 8, "lr": 0.05, "batch_size": 16, "max_epochs": 6, "eval_every": 2, "patience": 2},
}
# Every registered model, with tiny settings (multimodal ones read the text/image features below).
CONTRACT = {
    "popularity": {},
    **TINY,
    "content_knn": {"k": 3},
    "vbpr": {"dim": 4, "content_dim": 4, "lr": 0.05, "batch_size": 16, "max_epochs": 4, "patience": 2},
    "two_tower": {"dim": 4, "input_dim": 8, "hidden": 8, "lr": 0.01, "batch_size": 16, "max_epochs": 4, "patience": 2},
    "mm_graph": {"dim": 4, "knn_k": 3, "lr": 0.05, "batch_size": 16, "max_epochs": 4, "patience": 2},
}
ALL = available_models()
TRAINED = ("bpr", "lightgcn")


def tiny_split(seed: int = 0) -> tuple[Interactions, sp.csr_matrix]:
    """12 users x 10 items, 3 to 5 training items each; user 11 has no training history (cold)."""
    rng = np.random.default_rng(seed)
    train = np.zeros((12, 10), np.float32)
    valid = np.zeros((12, 10), np.float32)
    for u in range(11):
        items = rng.choice(10, size=int(rng.integers(4, 7)), replace=False)
        train[u, items[:-1]] = 1
        valid[u, items[-1]] = 1
    valid[11, 0] = 1
    ids_u = np.array([f"u{i}" for i in range(12)], dtype=object)
    ids_i = np.array([f"i{i}" for i in range(10)], dtype=object)
    feats = {"text": rng.normal(size=(10, 8)).astype(np.float32), "image": rng.normal(size=(10, 4)).astype(np.float32)}
    masks = {m: np.ones(10, bool) for m in feats}
    masks["image"][3] = False  # a missing modality is data
    feats["image"][3] = 0.0
    return with_features(Interactions(sp.csr_matrix(train), ids_u, ids_i), feats, masks), sp.csr_matrix(valid)


@pytest.fixture(scope="module")
def data() -> tuple[Interactions, sp.csr_matrix]:
    return tiny_split()


def test_registry_lists_the_baselines():
    assert {"popularity", "itemknn", "bpr", "lightgcn"} <= set(available_models())


def test_every_registered_model_has_a_contract_config():
    missing = sorted(set(ALL) - set(CONTRACT))
    assert not missing, f"add tiny settings for {missing} to CONTRACT so the contract tests run on them"


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(ModelError, match="Did you mean 'lightgcn'"):
        create_model("lightgnc")


@pytest.mark.parametrize("name", ALL)
def test_unknown_hyper_parameter_is_a_model_error(name):
    with pytest.raises(ModelError, match="bad hyper-parameters"):
        create_model(name, not_a_param=1)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("itemknn", {"similarity": "jaccard"}, "unknown similarity"),
        ("itemknn", {"k": 0}, "k must be"),
        ("bpr", {"dim": 0}, "must be > 0"),
        ("lightgcn", {"n_layers": -1}, "n_layers"),
    ],
)
def test_bad_hyper_parameter_values(name, params, match):
    with pytest.raises(ModelError, match=match):
        create_model(name, **params)


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_bad_learning_rate_is_reported_at_fit(name, data):
    train, valid = data
    with pytest.raises(ModelError, match="lr"):
        create_model(name, **{**TINY[name], "lr": 0.0}).fit(train, valid)


@pytest.mark.parametrize("name", ALL)
def test_fit_and_score_shapes(name, data):
    train, valid = data
    model = create_model(name, **CONTRACT[name]).fit(train, valid)
    scores = model.score(np.array([0, 3, 5]))
    assert scores.shape == (3, 10)
    assert scores.dtype == np.float32
    assert np.isfinite(scores).all()
    assert model.score(np.array([1]), items=np.array([2, 7])).shape == (1, 2)
    assert model.epochs >= 1 and model.train_seconds > 0


@pytest.mark.parametrize("name", TRAINED)
def test_training_history_is_recorded(name, data):
    train, valid = data
    model = create_model(name, **TINY[name]).fit(train, valid)
    assert [h["epoch"] for h in model.history] == list(range(1, model.epochs + 1))
    assert all(h["loss"] > 0 and h["seconds"] >= 0 for h in model.history)
    evaluated = [h for h in model.history if "valid_recall@20" in h]
    assert [h["epoch"] for h in evaluated] == [e for e in range(2, model.epochs + 1, 2)]
    assert model.best_epoch in [h["epoch"] for h in evaluated]


@pytest.mark.parametrize("name", TRAINED)
def test_same_seed_same_scores_other_seed_other_scores(name, data):
    train, valid = data
    users = np.arange(11)
    a = create_model(name, **TINY[name], seed=3).fit(train, valid).score(users)
    b = create_model(name, **TINY[name], seed=3).fit(train, valid).score(users)
    c = create_model(name, **TINY[name], seed=4).fit(train, valid).score(users)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_itemknn_is_deterministic(data):
    train, _ = data
    users = np.arange(12)
    a = create_model("itemknn", k=3).fit(train).score(users)
    b = create_model("itemknn", k=3).fit(train).score(users)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(name, data, tmp_path: Path):
    train, valid = data
    model = create_model(name, **CONTRACT[name]).fit(train, valid)
    model.save(tmp_path / name)
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    assert (loaded.epochs, loaded.best_epoch) == (model.epochs, model.best_epoch)
    users = np.arange(12)
    np.testing.assert_array_equal(loaded.score(users), model.score(users))
    np.testing.assert_array_equal(loaded.recommend(users, k=3)[0], model.recommend(users, k=3)[0])


@pytest.mark.parametrize("name", ALL)
def test_recommend_excludes_training_items(name, data):
    train, valid = data
    model = create_model(name, **CONTRACT[name]).fit(train, valid)
    users = np.arange(11)
    top, scores = model.recommend(users, k=4)
    assert top.shape == (11, 4) and scores.shape == (11, 4)
    seen = train.matrix.toarray() > 0
    assert not seen[users[:, None], top].any()
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
    # without the mask, a user's seen items do show up for at least one user
    top_all, _ = model.recommend(users, k=4, exclude_seen=False)
    assert seen[users[:, None], top_all].any()


@pytest.mark.parametrize("name", ALL)
def test_cold_user_gets_popularity(name, data):
    train, valid = data
    model = create_model(name, **CONTRACT[name]).fit(train, valid)
    counts = np.asarray(train.matrix.sum(axis=0)).ravel()
    np.testing.assert_array_equal(model.score(np.array([11]))[0], counts.astype(np.float32))
    if name != "popularity":  # a warm user is not scored by popularity (except by the popularity model)
        assert not np.array_equal(model.score(np.array([0]))[0], counts.astype(np.float32))


@pytest.mark.parametrize("name", ALL)
def test_clone_keeps_params(name):
    model = create_model(name, **CONTRACT[name])
    params = model.get_params()
    override = {"seed": 7} if "seed" in params else {}  # popularity and the kNN models have no seed
    other = model.clone(**override)
    assert type(other) is type(model) and other.get_params() == {**params, **override}


def test_unfitted_model_cannot_score():
    with pytest.raises(ModelError, match="not fitted"):
        create_model("bpr").score(np.array([0]))


def test_fit_without_validation_runs_all_epochs(data):
    train, _ = data
    model = create_model("bpr", **TINY["bpr"]).fit(train)
    assert model.epochs == TINY["bpr"]["max_epochs"] == model.best_epoch
    assert all("valid_recall@20" not in h for h in model.history)


def test_bad_device_is_a_model_error(data):
    train, valid = data
    with pytest.raises(ModelError, match="bad device"):
        create_model("bpr", **TINY["bpr"], device="not-a-device").fit(train, valid)
