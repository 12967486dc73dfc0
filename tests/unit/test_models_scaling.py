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
from mmrec.models.item_features import modality_mask, with_features

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
    model = create_model(
        "two_tower",
        modalities=["text", "image"],
        dim=8,
        input_dim=0,
        hidden=8,
        batch_size=16,
        max_epochs=2,
        use_history=use_history,
        history_cache=history_cache,
        align_weight=0.0,
    )
    calls: list[int] = []
    original = type(model)._tower_sources

    def counting(self, items, train):
        calls.append(self._t["warm"].shape[0] if items is None else int(items.shape[0]))
        return original(self, items, train)

    monkeypatch.setattr(type(model), "_tower_sources", counting)
    model.fit(train)
    batches = int(np.ceil(train.nnz / 16))
    full = [c for c in calls if c == train.n_items]
    partial = [c for c in calls if c != train.n_items]
    assert len(partial) == 2 * batches and max(partial) <= per_batch < train.n_items
    # whole-catalogue passes: once per epoch for the history table (cached) and twice at export
    # (the item table, and the cross-modal projection's joint-space vectors for search), never
    # once per batch (that was 2 x 19 passes here)
    assert len(full) == (2 if use_history and history_cache else 0) + 2
    assert sum(calls) <= 2 * train.n_items + 2 * batches * per_batch + 2 * train.n_items


def test_two_tower_batch_vectors_equal_the_full_table_computation() -> None:
    import torch

    train = wide_catalogue(n_items=400)
    model = create_model(
        "two_tower",
        modalities=["text", "image"],
        dim=8,
        input_dim=0,
        hidden=8,
        id_dropout=0.0,
        max_epochs=1,
        history_cache=False,
    )
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


def test_random_walks_estimate_the_propagated_layers() -> None:
    from mmrec.models.lightgcn import normalized_adjacency, random_walks

    train = wide_catalogue(n_items=40, n_users=30, per_user=6)
    adj = normalized_adjacency(train.matrix)
    value = np.random.default_rng(1).normal(size=(adj.shape[0], 3))
    nodes = np.array([0, 7, 30 + 5, adj.shape[0] - 1])
    positions, weights = random_walks(adj, nodes, 20_000, 2, np.random.default_rng(0))
    dense = adj.toarray()
    for hop in range(2):
        est = (weights[hop][:, None] * value[positions[hop]]).reshape(len(nodes), 20_000, 3).mean(axis=1)
        exact = (np.linalg.matrix_power(dense, hop + 1) @ value)[nodes]
        np.testing.assert_allclose(est, exact, atol=0.05)
    # a node without edges contributes nothing (weight 0), it does not walk off the graph
    isolated = np.flatnonzero(np.diff(adj.indptr) == 0)
    if len(isolated):
        _, w = random_walks(adj, isolated[:1], 5, 2, np.random.default_rng(0))
        assert not w.any()


def _built(name: str, train: Interactions, **params):
    import torch

    model = create_model(name, dim=8, **params)
    if name == "mm_graph":
        model._graphs = model.item_graphs(train)
    model._params = model._build(sp.csr_matrix(train.matrix), torch.Generator().manual_seed(0), torch.device("cpu"))
    return model


@pytest.mark.parametrize("name", ["lightgcn", "mm_graph"])
def test_sampled_propagation_is_exact_after_a_refresh_and_unbiased_after(name) -> None:
    import torch

    train = wide_catalogue(n_items=300, n_users=80, per_user=8)
    extra = {"modalities": ["text", "image"], "knn_k": 4} if name == "mm_graph" else {}
    model = _built(name, train, propagation="sampled", walks=16, refresh_every=10**6, **extra)
    assert model._sampled and model.sparse_tables == ("ego",)
    idx = torch.tensor([0, 5, 79, 80 + 3, 80 + 200, 80 + 299])
    with torch.no_grad():
        exact = model._propagate(model._ego())[idx]
        np.testing.assert_allclose(model._final_rows(idx).numpy(), exact.numpy(), atol=1e-6)
        model._params["ego"].add_(
            0.1 * torch.randn(model._params["ego"].shape, generator=torch.Generator().manual_seed(2))
        )
        drifted = model._propagate(model._ego())[idx]
        est = torch.stack([model._final_rows(idx) for _ in range(300)]).mean(0)
    assert float((est - drifted).abs().max()) < 0.1 * float((exact - drifted).abs().max())  # far closer than stale


def test_sampled_steps_touch_the_batch_rows_and_refresh_at_the_set_pace(monkeypatch) -> None:

    train = wide_catalogue(n_items=3000, n_users=60, per_user=5)
    model = create_model(
        "lightgcn", dim=8, batch_size=16, max_epochs=2, propagation="sampled", walks=2, refresh_every=4
    )
    refreshes: list[int] = []
    grads: list[tuple[bool, int]] = []  # (sparse?, distinct rows) of each step's ego gradient
    original_refresh = type(model)._refresh_snapshot

    def counting_refresh(self):
        if not refreshes:  # first step: watch the ego table's gradients from now on
            self._params["ego"].register_hook(
                lambda g: grads.append((g.is_sparse, int(g.coalesce().indices().unique().numel())))
            )
        refreshes.append(self._step)
        original_refresh(self)

    monkeypatch.setattr(type(model), "_refresh_snapshot", counting_refresh)
    model.fit(train)
    steps = 2 * int(np.ceil(train.nnz / 16))
    assert refreshes == list(range(0, steps, 4))  # one full propagation per 4 steps, not per step
    # each step's gradient is sparse, on the batch's nodes and their walks' only (3 x 16 + 3 x 16 x 2 x 2)
    assert len(grads) == steps and all(sparse for sparse, _ in grads)
    assert max(rows for _, rows in grads) <= 3 * 16 * (1 + 2 * 2) < train.n_users + train.n_items


@pytest.mark.parametrize("name", ["lightgcn", "mm_graph"])
def test_full_step_penalty_weighs_the_table_by_the_batch_and_matches_the_gathered_rows(name) -> None:
    import torch

    from mmrec.models.bpr import l2_penalty

    train = wide_catalogue(n_items=300, n_users=80, per_user=8)
    extra = {"modalities": ["text", "image"], "knn_k": 4} if name == "mm_graph" else {}
    model = _built(name, train, propagation="full", **extra)
    ego = model._params["ego"]
    idx = torch.tensor([0, 5, 5, 79, 80 + 3, 80 + 3, 80 + 3, 80 + 299])  # repeats count, as in a batch
    penalty = model._ego_penalty(idx, 3)
    (grad,) = torch.autograd.grad(penalty, ego)
    expected = l2_penalty(ego[idx], 3)
    (expected_grad,) = torch.autograd.grad(expected, ego)
    assert float(penalty) == pytest.approx(float(expected), rel=1e-6)
    torch.testing.assert_close(grad, expected_grad)
    assert int((grad.abs().sum(dim=1) > 0).sum()) == 5  # only the named rows move


def test_only_an_explicit_sampled_propagation_samples() -> None:
    assert not create_model("lightgcn").uses_sampling()  # auto is the exact step
    assert not create_model("lightgcn", propagation="full").uses_sampling()
    assert create_model("lightgcn", propagation="sampled").uses_sampling()
    assert not create_model("lightgcn", propagation="sampled", n_layers=0).uses_sampling()  # nothing to propagate
    with pytest.raises(ModelError, match="propagation must be one of"):
        create_model("lightgcn", propagation="walk")
    with pytest.raises(ModelError, match="max_full_steps must be >= 0"):
        create_model("mm_graph", max_full_steps=-1)


@pytest.mark.parametrize(
    ("name", "max_full_steps", "propagation", "steps"),
    [
        ("lightgcn", 4, "auto", 4),  # 300 interactions, batch 16 would be 19 steps: batch grows to 75
        ("mm_graph", 4, "full", 4),
        ("lightgcn", 0, "auto", 19),  # no bound: the configured batch
        ("lightgcn", 50, "auto", 19),  # the bound is above what the batch needs
        ("lightgcn", 4, "sampled", 19),  # a sampled step costs O(batch): no bound applies
    ],
)
def test_full_graph_propagations_per_epoch_are_bounded_by_growing_the_batch(
    monkeypatch, name, max_full_steps, propagation, steps
) -> None:
    import torch

    train = wide_catalogue(n_items=400, n_users=60, per_user=5)  # 300 interactions
    extra = {"modalities": ["text", "image"], "knn_k": 4} if name == "mm_graph" else {}
    model = create_model(
        name, dim=8, batch_size=16, max_epochs=2, max_full_steps=max_full_steps, propagation=propagation, **extra
    )
    propagations, batches = [], []
    original_propagate, original_loss = type(model)._propagate, type(model)._batch_loss

    def counting_propagate(self, ego=None):
        propagations.append(1)
        return original_propagate(self, ego)

    def counting_loss(self, users, pos, neg):
        batches.append(int(users.shape[0]))
        return original_loss(self, users, pos, neg)

    lrs: list[float] = []  # what each optimiser was built with

    def recording(cls):
        class Recording(cls):
            def __init__(self, params, lr):
                lrs.append(lr)
                super().__init__(params, lr=lr)

        return Recording

    monkeypatch.setattr(type(model), "_propagate", counting_propagate)
    monkeypatch.setattr(type(model), "_batch_loss", counting_loss)
    monkeypatch.setattr(torch.optim, "Adam", recording(torch.optim.Adam))
    monkeypatch.setattr(torch.optim, "SparseAdam", recording(torch.optim.SparseAdam))
    model.fit(train)
    assert model.steps_per_epoch == steps and len(batches) == 2 * steps
    assert sum(batches) == 2 * 300  # every interaction once per epoch, whatever the batch
    # the learning rate follows the batch's growth by the square-root rule (75 = 300 / 4 triples)
    grown = 75 / 16 if steps == 4 else 1.0
    assert lrs and all(lr == pytest.approx(model.lr * grown**0.5) for lr in lrs)
    if propagation != "sampled":
        assert len(propagations) == 2 * steps + 1  # one per step, and one to export the factors


def test_content_knn_hnsw_keeps_exact_values_and_finds_the_exact_neighbours(monkeypatch) -> None:
    from mmrec.models import neighbours
    from mmrec.models.neighbours import use_hnsw

    assert use_hnsw("auto", neighbours.ANN_MIN_ITEMS) and not use_hnsw("auto", neighbours.ANN_MIN_ITEMS - 1)
    calls: list[int] = []
    original = neighbours.hnsw_candidates
    monkeypatch.setattr(neighbours, "hnsw_candidates", lambda b, q, n: calls.append(len(b)) or original(b, q, n))
    monkeypatch.setattr(neighbours, "ANN_MIN_ITEMS", 100)  # every modality group gets an HNSW index
    train = wide_catalogue(n_items=1500)
    exact = create_model("content_knn", modalities=["text", "image"], k=10, search="exact").fit(train)
    approx = create_model("content_knn", modalities=["text", "image"], k=10, search="hnsw").fit(train)
    assert not exact.neighbour_search.approximate and approx.neighbour_search.approximate
    a, e = approx.similarity, exact.similarity
    assert a.nnz <= 1500 * 10 and not a.diagonal().any()
    # every kept value is the exact fused similarity of its pair (only the choice is approximate)
    rows, cols = a.nonzero()
    np.testing.assert_allclose(np.asarray(a[rows, cols]).ravel(), _dense_fused(train)[rows, cols], rtol=1e-4, atol=1e-5)
    overlap = sum(len(set(a[i].indices) & set(e[i].indices)) for i in range(1500)) / e.nnz
    assert overlap > 0.9 and abs(approx.neighbour_search.recall - overlap) < 0.1
    assert approx.neighbour_search.sample == 200
    # one index per set of modalities present: text + image items, and text-only (no poster) items
    assert sorted(calls) == sorted(
        [int(modality_mask(train, "image").sum()), int((~modality_mask(train, "image")).sum())]
    )
    with pytest.raises(ModelError, match="neighbour search must be one of"):
        create_model("content_knn", search="annoy")


def _dense_fused(train: Interactions) -> np.ndarray:
    from mmrec.models.content_knn import fused_rows
    from mmrec.models.item_features import centred_unit

    blocks = [
        (centred_unit(train.require(m), modality_mask(train, m)), modality_mask(train, m), 1.0)
        for m in ("text", "image")
    ]
    return fused_rows(blocks, np.arange(train.n_items))


def test_mm_graph_hnsw_item_graph_matches_the_exact_graph(monkeypatch) -> None:
    from mmrec.models import neighbours
    from mmrec.models.item_features import centred_unit
    from mmrec.models.mm_graph import knn_item_graph

    monkeypatch.setattr(neighbours, "ANN_MIN_ITEMS", 100)

    train = wide_catalogue(n_items=1500)
    mask = modality_mask(train, "image")
    feats = centred_unit(train.require("image"), mask)
    warm = np.diff(sp.csc_matrix(train.matrix).indptr) > 0
    warm[::3] = True  # more warm columns than the 60 users touch
    exact = knn_item_graph(feats, mask, warm, 5, search="exact")
    approx = knn_item_graph(feats, mask, warm, 5, search="hnsw")
    assert set(approx.indices) <= set(np.flatnonzero(warm & mask)) and not approx.diagonal().any()
    sums = np.asarray(approx.sum(axis=1)).ravel()
    np.testing.assert_allclose(sums[sums > 0], 1.0, rtol=1e-5)
    assert not sums[~mask].any()  # no image, no edges in the image graph
    overlap = sum(len(set(approx[i].indices) & set(exact[i].indices)) for i in range(1500)) / exact.nnz
    assert overlap > 0.9


@pytest.mark.parametrize("sampled", [False, True])
def test_item_graph_rows_gather_each_named_item_once_and_match_the_dense_product(sampled) -> None:
    import torch

    train = wide_catalogue(n_items=300, n_users=80, per_user=8)
    model = _built(
        "mm_graph", train, modalities=["text", "image"], knn_k=6, propagation="sampled" if sampled else "full"
    )
    model._sparse_on = sampled
    items = torch.tensor([3, 3, 10, 299, 150, 10, 42])  # repeats, as in a batch
    gathered: list[int] = []
    original = type(model)._rows

    def counting(self, name, index):
        gathered.append(int(index.numel()))
        return original(self, name, index)

    type(model)._rows = counting
    try:
        out = model._item_graph_rows(items)
    finally:
        type(model)._rows = original
    ego = model._params["ego"].detach().numpy()[model._n_users :]
    dense = sum(g.toarray() for g in model._graphs.values())[items.numpy()] @ ego
    np.testing.assert_allclose(out.detach().numpy(), model.item_weight * dense, rtol=1e-5, atol=1e-6)
    named = np.unique(np.concatenate([g[items.numpy()].indices for g in model._graphs.values()]))
    assert gathered == [len(named)] and len(named) < 2 * 6 * len(items)  # once per distinct neighbour
    out.sum().backward()
    grad = model._params["ego"].grad
    assert grad is not None and grad.is_sparse == sampled
