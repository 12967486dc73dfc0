"""Shared training pieces: negative sampling, the early-stopping loop, best-epoch restore."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmrec.errors import ModelError
from mmrec.models.training import NegativeSampler, bpr_batches, positive_pairs, run_epochs, seeded_generators


def test_negatives_are_never_positives():
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 12)) < 0.6).astype(np.float32)  # dense enough that rejections happen
    dense[:, 0] = 0  # every user keeps at least one negative
    m = sp.csr_matrix(dense)
    sampler = NegativeSampler(m)
    users = np.repeat(np.arange(30), 50)
    neg = sampler.sample(users, np.random.default_rng(1))
    assert neg.shape == users.shape
    assert not dense[users, neg].any()
    assert len(np.unique(neg)) > 2  # uniform over the negatives, not one fallback item


def test_sampling_is_seeded():
    m = sp.csr_matrix(np.eye(5, dtype=np.float32))
    users = np.arange(5).repeat(4)
    a = NegativeSampler(m).sample(users, np.random.default_rng(3))
    b = NegativeSampler(m).sample(users, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_user_with_every_item_has_no_negative():
    m = sp.csr_matrix(np.array([[1, 1, 1], [1, 0, 0]], np.float32))
    with pytest.raises(ModelError, match="every item"):
        NegativeSampler(m).sample(np.array([0, 1]), np.random.default_rng(0))


def test_epoch_batches_cover_every_pair_once():
    m = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]], np.float32))
    users, items = positive_pairs(m)
    rng, _ = seeded_generators(0)
    batches = list(bpr_batches(users, items, NegativeSampler(m), 2, rng))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    pairs = sorted((int(u), int(i)) for b in batches for u, i in zip(b[0], b[1], strict=True))
    assert pairs == sorted(zip(users.tolist(), items.tolist(), strict=True))


def test_early_stopping_restores_the_best_epoch():
    # validation peaks at epoch 2, then never improves: patience 2 stops after epoch 4
    curve = {1: 0.1, 2: 0.3, 3: 0.2, 4: 0.3, 5: 0.5}
    weights = {"w": 0}
    restored = []

    def train_epoch(epoch: int) -> float:
        weights["w"] = epoch  # the "weights" after epoch e are e
        return 1.0 / epoch

    history, epochs, best = run_epochs(
        train_epoch,
        evaluate=lambda: curve[weights["w"]],
        snapshot=lambda: dict(weights),
        restore=lambda state: (restored.append(state), weights.update(state)),
        epochs=10,
        eval_every=1,
        patience=2,
    )
    assert (epochs, best) == (4, 2)
    assert weights == {"w": 2} and restored == [{"w": 2}]
    assert [h["valid_recall@20"] for h in history] == [0.1, 0.3, 0.2, 0.3]
    assert all(h["loss"] == pytest.approx(1.0 / h["epoch"]) for h in history)


def test_evaluation_every_n_epochs_and_at_the_last():
    calls = []
    history, epochs, best = run_epochs(
        lambda e: calls.append(e) or 1.0,
        evaluate=lambda: float(len(calls)),  # improves every time it is asked
        snapshot=lambda: None,
        restore=lambda s: None,
        epochs=5,
        eval_every=2,
        patience=1,
    )
    assert [h["epoch"] for h in history if "valid_recall@20" in h] == [2, 4, 5]
    assert (epochs, best) == (5, 5)


def _flat_after(peak_epoch: int):
    """A validation curve that rises until `peak_epoch`, then stays below the peak."""
    state = {"e": 0}

    def train_epoch(epoch: int) -> float:
        state["e"] = epoch
        return 1.0

    def evaluate() -> float:
        e = state["e"]
        return float(e) if e <= peak_epoch else peak_epoch - 0.5

    return train_epoch, evaluate


def test_patience_counts_epochs_not_evaluations():
    # eval every 5 epochs, best at 5, patience 10 epochs: checks at 10 and 15 do not improve;
    # 15 - 5 >= 10 stops at 15 (counted in evaluations, patience 10 would run to epoch 55)
    train_epoch, evaluate = _flat_after(5)
    _, epochs, best = run_epochs(
        train_epoch, evaluate, lambda: None, lambda s: None, epochs=200, eval_every=5, patience=10
    )
    assert (epochs, best) == (15, 5)


def test_min_epochs_keeps_training_past_an_early_plateau():
    train_epoch, evaluate = _flat_after(2)
    _, epochs, best = run_epochs(
        train_epoch, evaluate, lambda: None, lambda s: None, epochs=100, eval_every=1, patience=3, min_epochs=20
    )
    assert (epochs, best) == (20, 2)
    _, epochs, _ = run_epochs(
        train_epoch, evaluate, lambda: None, lambda s: None, epochs=100, eval_every=1, patience=3, min_epochs=0
    )
    assert epochs == 5


def test_each_evaluation_logs_one_info_line_and_reports_progress(caplog):
    from mmrec.progress import progress_hook

    seen = []
    train_epoch, evaluate = _flat_after(3)
    with caplog.at_level("INFO", logger="mmrec.models.training"), progress_hook(lambda *a: seen.append(a)):
        run_epochs(train_epoch, evaluate, lambda: None, lambda s: None, epochs=10, eval_every=2, patience=4, name="toy")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("toy epoch")]
    assert len(lines) == 4  # evaluations at 2, 4, 6 and 8 (stop: 8 - 4 >= 4)
    assert "toy epoch 2/10: loss 1.0000, valid recall@20 2.0000 (best 2.0000 at epoch 2)" in lines[0]
    assert "s/epoch" in lines[0] and "left" in lines[0]
    assert [(k, d, t) for k, d, t, _ in seen] == [("train-toy", e, 10) for e in (2, 4, 6, 8)] + [("train-toy", 10, 10)]


def test_diverging_loss_is_an_error():
    with pytest.raises(ModelError, match="diverged"):
        run_epochs(lambda e: float("nan"), None, lambda: None, lambda s: None, epochs=3, eval_every=1, patience=1)


def test_model_restores_its_best_epoch():
    """On random data BPR overfits: validation peaks, falls, and the kept weights are the peak's."""
    from mmrec.data.interactions import Interactions
    from mmrec.evaluate import evaluate_scores
    from mmrec.models import create_model

    rng = np.random.default_rng(0)
    train = (rng.random((50, 80)) < 0.15).astype(np.float32)
    valid = sp.csr_matrix(((rng.random((50, 80)) < 0.05) & (train == 0)).astype(np.float32))
    data = Interactions(sp.csr_matrix(train), np.arange(50).astype(str), np.arange(80).astype(str))
    model = create_model("bpr", dim=8, lr=0.05, batch_size=64, max_epochs=40, patience=2, seed=1)
    model.fit(data, valid)
    curve = {h["epoch"]: h["valid_recall@20"] for h in model.history}
    assert model.best_epoch < model.epochs  # it stopped after worse epochs ...
    assert curve[model.epochs] < curve[model.best_epoch] == max(curve.values())
    final = evaluate_scores(model.score, valid, exclude=data.matrix, ks=(20,))["recall@20"]
    assert final == pytest.approx(curve[model.best_epoch])  # ... but kept the best epoch's weights


def test_bpr_item_bias_learns_popularity_and_scores_as_an_extra_factor_column(tmp_path):
    """With item_bias the bias (the last item-factor column, users' last column 1) ranks items by
    how often they are positives; saved and reloaded it scores the same."""
    from mmrec.data.interactions import Interactions
    from mmrec.models import create_model, load_model

    rng = np.random.default_rng(0)
    pop = np.linspace(0.6, 0.02, 30)  # item 0 the most popular ... item 29 the least
    train = sp.csr_matrix((rng.random((60, 30)) < pop[None, :]).astype(np.float32))
    data = Interactions(train, np.arange(60).astype(str), np.arange(30).astype(str))
    model = create_model("bpr", dim=4, lr=0.05, reg=1e-3, batch_size=64, max_epochs=30, seed=3, item_bias=True)
    model.fit(data, None)
    assert model.user_factors.shape == (60, 5) and model.item_factors.shape == (30, 5)
    assert np.all(model.user_factors[:, -1] == 1.0)
    bias = model.item_factors[:, -1]
    counts = np.asarray(train.sum(axis=0)).ravel()
    rho = np.corrcoef(np.argsort(np.argsort(bias)), np.argsort(np.argsort(counts)))[0, 1]
    assert rho > 0.8, rho
    plain = create_model("bpr", dim=4, lr=0.05, reg=1e-3, batch_size=64, max_epochs=2, seed=3)
    plain.fit(data, None)
    assert plain.item_factors.shape == (30, 4)  # off by default: the factors only
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert again.item_bias is True
    users = np.arange(5)
    np.testing.assert_allclose(again.score(users), model.score(users), rtol=1e-6)
