"""Training cost shapes (issue 15): per-batch work follows the batch, not the catalogue.

A large catalogue of which each user touches a few items: a model that runs its item tower (or
an item graph) over every item in every batch shows it here as rows or memory growing with
n_items. Exactness checks make sure the cheaper batch computation is the same computation.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.data.interactions import Interactions
from mmrec.errors import ModelError
from mmrec.models import content_knn as content_knn_module
from mmrec.models import create_model
from mmrec.models.item_features import with_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def wide_catalogue(n_items: int = 3000, n_users: int = 60, per_user: int = 5, seed: int = 0) -> Interactions:
    """`n_users` users with `per_user` items each out of a catalogue of `n_items` (text + image)."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_users), per_user)
    cols = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    data = Interactions(m, np.arange(n_users).astype(str).astype(object), np.arange(n_items).astype(str).astype(object))
    image_mask = rng.random(n_items) > 0.1
    image = rng.normal(size=(n_items, 8)).astype(np.float32) * image_mask[:, None]
    feats = {"text": rng.normal(size=(n_items, 12)).astype(np.float32), "image": image}
    return with_features(data, feats, {"text": np.ones(n_items, bool), "image": image_mask})


@pytest.mark.parametrize(
    ("use_history", "history_cache", "per_batch"),
    [(True, True, 32), (True, False, 16 * 5 + 32), (False, False, 32)],  # 16 users: 32 pos/neg, 80 history
)
def test_two_tower_tower_rows_follow_the_batch_not_the_catalogue(monkeypatch, use_history, history_cache, per_batch):
    train = wide_catalogue()
    model = create_model("two_tower", modalities=["text", "image"], dim=8, input_dim=0, hidden=8, batch_size=16,
                         max_epochs=2, use_history=use_history, history_cache=history_cache, align_weight=0.0)
    calls: list[int] = []
    original = type(model)._tower_sources

    def counting(self, items, train_flag):
        calls.append(self._t["warm"].shape[0] if items is None else int(items.shape[0]))
        return original(self, items, train_flag)

    monkeypatch.setattr(type(model), "_tower_sources", counting)
    model.fit(train)
    batches = int(np.ceil(train.nnz / 16))
    full = [c for c in calls if c == train.n_items]
    partial = [c for c in calls if c != train.n_items]
    assert len(partial) == 2 * batches and max(partial) <= per_batch < train.n_items
    # whole-catalogue passes: once per epoch for the history table (cached) and once at export,
    # never once per batch (that was 2 x 19 passes here)
    assert len(full) == (2 if use_history and history_cache else 0) + 1
    assert sum(calls) <= 2 * train.n_items + 2 * batches * per_batch + train.n_items


def test_two_tower_batch_vectors_equal_the_full_table_computation() -> None:
    import torch

    train = wide_catalogue(n_items=400)
    model = create_model("two_tower", modalities=["text", "image"], dim=8, input_dim=0, hidden=8, id_dropout=0.0,
                         max_epochs=1, history_cache=False)
    model.fit(train)
    # rebuild the training state (fit frees it) and compare one batch both ways
    from mmrec.models.item_features import centred_unit, modality_mask

    model._feats = [centred_unit(train.require(m), modality_mask(train, m)) for m in model.modalities]
    model._masks = [modality_mask(train, m) for m in model.modalities]
    gen = torch.Generator().manual_seed(0)
    model._params = model._build(sp.csr_matrix(train.matrix), gen, torch.device("cpu"))
    users = torch.tensor([0, 3, 3, 7])
    items = torch.tensor([5, 17, 399, 0, 250, 5, 6, 7])
    with torch.no_grad():
        u_batch, i_batch = model._batch_items(users, items)
        table = model._items(train=True)  # id_dropout 0: deterministic
        u_full = model._users(users, table)
    np.testing.assert_allclose(u_batch.numpy(), u_full.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(i_batch.numpy(), table[items].numpy(), rtol=1e-5, atol=1e-6)
    assert model.last_tower_rows < train.n_items
    # the per-epoch cached table gives the same vectors at the start of an epoch
    model.history_cache = True
    model._epoch_start(1)
    with torch.no_grad():
        u_cached, i_cached = model._batch_items(users, items)
    np.testing.assert_allclose(u_cached.numpy(), u_full.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(i_cached.numpy(), table[items].numpy(), rtol=1e-5, atol=1e-6)
    assert model.last_tower_rows == len(items)


def test_mm_graph_batch_loss_equals_the_full_item_graph_formulation() -> None:
    import torch

    from mmrec.models.bpr import bpr_loss, l2_penalty

    train = wide_catalogue(n_items=300)
    model = create_model("mm_graph", modalities=["text", "image"], dim=8, knn_k=4, max_epochs=1)
    model._graphs = model.item_graphs(train)
    model._n_users = train.n_users
    gen = torch.Generator().manual_seed(0)
    model._params = model._build(sp.csr_matrix(train.matrix), gen, torch.device("cpu"))
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([100, 200, 299])
    with torch.no_grad():
        batch = model._batch_loss(users, pos, neg)
        u_all, parts = model._parts()
        items = sum(parts.values())
        idx = torch.cat([users, pos + train.n_users, neg + train.n_users])
        full = bpr_loss(u_all[users], items[pos], items[neg]) + model.reg * l2_penalty(model._params["ego"][idx], 3)
    assert float(batch) == pytest.approx(float(full), rel=1e-5)


def test_content_knn_memory_is_n_times_k() -> None:
    train = wide_catalogue(n_items=3000)
    model = create_model("content_knn", modalities=["text", "image"], k=10).fit(train)
    sim = model.similarity
    assert sp.issparse(sim) and sim.shape == (3000, 3000)
    assert sim.nnz <= 3000 * 10
    state_bytes = sum(v.nbytes for v in model._state().values())
    assert state_bytes < 3000 * 10 * 12 + 3001 * 8  # data + indices + indptr: O(n k), not 36 MB dense


def test_content_knn_dense_refused_for_large_catalogues(monkeypatch) -> None:
    monkeypatch.setattr(content_knn_module, "DENSE_MAX_ITEMS", 100)
    train = wide_catalogue(n_items=300)
    with pytest.raises(ModelError, match=r"k=0 keeps a dense 300 x 300.*set k"):
        create_model("content_knn", modalities=["text", "image"], k=0).fit(train)


def test_training_moves_batches_with_the_runtime_copy(monkeypatch) -> None:
    from mmrec import runtime

    calls: list[str] = []
    original = runtime.to_device

    def spy(tensor, device):
        calls.append(str(device))
        return original(tensor, device)

    monkeypatch.setattr(runtime, "to_device", spy)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    train = wide_catalogue(n_items=200)
    model = create_model("bpr", dim=4, batch_size=100, max_epochs=1, device="auto").fit(train)
    assert model.user_factors is not None
    assert calls == ["cpu"] * 3 * int(np.ceil(train.nnz / 100))  # users, positives, negatives per batch
    with pytest.raises(ModelError, match="bad device"):
        create_model("bpr", dim=4, max_epochs=1, device="cuda:0").fit(train)

