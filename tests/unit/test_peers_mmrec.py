"""benchmarks/peers_mmrec.py without MMRec: the `.inter` file and feature files it writes in MMRec's
format (labels, contiguous ids, cold items indexed but untrained, absent vectors), the check that a
setting is one point of MMRec's grid, the best-epoch bookkeeping, the trainer hook that replaces
MMRec's per-epoch validation and skips its per-epoch test, and the message when MMRec is missing."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mmrec.data.splits import SplitFrames
from tests.unit.test_peers_common import _frames, loaded_script


@pytest.fixture(scope="module")
def pm():
    with loaded_script("peers_mmrec.py", "peers_mmrec") as module:
        yield module


def test_mmrec_index_keeps_our_order_and_only_ids_the_split_uses(pm):
    assert pm.mmrec_index(["a", "b", "c", "d"], ["d", "b", "b"]) == {"b": 0, "d": 1}
    with pytest.raises(ValueError, match="not in our index"):
        pm.mmrec_index(["a"], ["a", "z"])


def test_inter_frame_labels_parts_and_puts_cold_rows_in_the_test_label(pm):
    f = _frames()  # users u0 u1; warm items w0..w3; cold_valid c0 c1; cold_test c2 c3
    users = {"u0": 0, "u1": 1}
    items = {i: n for n, i in enumerate(["c0", "c1", "c2", "c3", "w0", "w1", "w2", "w3"])}
    inter = pm.inter_frame(f, users, items)
    assert list(inter.columns) == ["userID", "itemID", "x_label"]
    by_label = {k: sorted(zip(g.userID, g.itemID, strict=True)) for k, g in inter.groupby("x_label")}
    assert by_label[0] == [(0, 4), (0, 5), (1, 6), (1, 7)]  # train only: MMRec trains on label 0
    assert by_label[1] == [(0, 6), (1, 4)]
    # test + cold_valid + cold_test: the cold items get an id (MMRec's item_num = max id + 1) but no edge
    assert by_label[2] == [(0, 0), (0, 2), (0, 7), (1, 1), (1, 3), (1, 5)]
    assert inter.itemID.max() + 1 == len(items)
    assert not set(inter[inter.x_label == 0].itemID) & {0, 1, 2, 3}


def test_inter_frame_refuses_a_cold_item_with_training_rows_or_an_unmapped_id(pm):
    f = _frames()
    items = {i: n for n, i in enumerate(["c0", "c1", "c2", "c3", "w0", "w1", "w2", "w3"])}
    leaky = {**f, "train": pd.concat([f["train"], f["cold_test"].iloc[:1]])}
    with pytest.raises(ValueError, match="training rows"):
        pm.inter_frame(leaky, {"u0": 0, "u1": 1}, items)
    with pytest.raises(ValueError, match="no MMRec id"):
        pm.inter_frame(f, {"u0": 0}, items)
    with pytest.raises(ValueError, match="unknown split part"):
        pm.inter_frame({"extra": f["train"]}, {"u0": 0, "u1": 1}, items)


def test_feature_rows_reorder_and_give_absent_vectors_the_mean(pm):
    x = np.array([[1.0, 0.0], [0.0, 0.0], [3.0, 4.0]], dtype=np.float32)  # our items 0, 1, 2; 1 has none
    present = np.array([True, False, True])
    rows, filled = pm.feature_rows(x, present, np.array([2, 1, 0]))  # MMRec's order: ours 2, 1, 0
    assert rows.tolist() == [[3.0, 4.0], [2.0, 2.0], [1.0, 0.0]] and filled == 1
    assert np.all(np.linalg.norm(rows, axis=1) > 0)  # no zero row: its cosine would be NaN in MMRec
    with pytest.raises(ValueError, match="no item"):
        pm.feature_rows(x, np.zeros(3, dtype=bool), np.array([0]))


def test_write_mmrec_data_is_readable_the_way_mmrec_reads_it(pm, tmp_path):
    f = _frames()
    ours_items = ["c0", "c1", "c2", "c3", "unused", "w0", "w1", "w2", "w3"]  # a catalogue-only item
    split = SimpleNamespace(frames=SplitFrames(**f), user_ids=["u0", "u1"], item_ids=ours_items)
    text = np.arange(18, dtype=np.float32).reshape(9, 2)
    masks = {"text": np.ones(9, dtype=bool)}
    maps = pm.write_mmrec_data(tmp_path, "toy", split, {"text": text}, masks)
    assert "unused" not in maps["items"] and len(maps["items"]) == 8
    # RecDataset: pd.read_csv(usecols=[uid, iid, label], sep="\t"), item_num = max + 1
    df = pd.read_csv(tmp_path / "toy" / "toy.inter", usecols=["userID", "itemID", "x_label"], sep="\t")
    assert len(df) == sum(len(v) for v in f.values()) and int(df.itemID.max()) + 1 == 8
    feats = np.load(tmp_path / "toy" / "text_feat.npy")
    assert feats.shape == (8, 2)
    assert feats[maps["items"]["w0"]].tolist() == text[ours_items.index("w0")].tolist()
    assert not (tmp_path / "toy" / "image_feat.npy").exists()
    pos = pm.positions(ours_items, maps["items"])
    assert pos[ours_items.index("unused")] == -1 and sorted(pos[pos >= 0].tolist()) == list(range(8))


def test_unresolved_names_the_hyper_parameters_still_given_as_a_grid(pm):
    config = {"reg_weight": [0.0, 1e-4], "dropout": 0.8, "weight_size": [64, 64]}
    assert pm.unresolved(config, ["reg_weight", "dropout"]) == ["reg_weight"]
    assert pm.unresolved({**config, "reg_weight": 1e-4}, ["reg_weight", "dropout"]) == []


def test_best_epochs_keep_the_first_best_per_slice_and_snapshot_only_on_improvement(pm):
    best = pm.BestEpochs(["valid", "cold_valid"])
    snaps: list[int] = []

    def snap(epoch):
        return lambda: snaps.append(epoch) or f"w{epoch}"

    def figs(v, c):
        return {"valid": {"recall@20": v}, "cold_valid": {"recall@20": c}}

    assert best.update(1, figs(0.10, 0.50), snap(1)) == ["valid", "cold_valid"]
    assert best.update(2, figs(0.12, 0.50), snap(2)) == ["valid"]  # a tie keeps epoch 1 on cold_valid
    assert best.update(3, figs(0.11, float("nan")), snap(3)) == []  # NaN never counts
    assert best.update(4, figs(0.11, 0.60), snap(4)) == ["cold_valid"]
    assert snaps == [1, 2, 4]
    assert {p: (b["epoch"], b["state"]) for p, b in best.best.items()} == {"valid": (2, "w2"), "cold_valid": (4, "w4")}
    assert [c["epoch"] for c in best.curve] == [1, 2, 3, 4] and best.curve[1]["valid"] == 0.12


def test_the_trainer_hook_validates_with_our_scores_and_skips_the_per_epoch_test(pm):
    class FakeTrainer:  # the shape of MMRec's Trainer.fit: per epoch, _valid_epoch(valid) then (test)
        def __init__(self, config, model):
            self.calls = []

        def fit(self, train_data, valid_data=None, test_data=None, saved=False, verbose=True):
            out = []
            for _ in range(3):
                score, result = self._valid_epoch(valid_data)
                _, test_result = self._valid_epoch(test_data)
                out.append((score, result, test_result))
            return out

    seen = []

    def on_epoch(epoch):
        seen.append(epoch)
        return {"valid": 0.1 * epoch, "cold_valid": 0.5}

    trainer = pm.scored_trainer(FakeTrainer)({}, None, on_epoch, "cold_valid")
    out = trainer.fit(None, valid_data=object(), test_data=None)
    assert seen == [1, 2, 3]  # once per epoch, numbered by epochs trained; never for test
    assert [o[0] for o in out] == [0.5, 0.5, 0.5]  # early stopping follows --stop-on
    assert out[0][1] == {"valid recall@20": 0.1, "cold_valid recall@20": 0.5} and out[0][2] == {}


def test_mmrec_compat_restores_what_newer_scipy_numpy_torch_removed_and_undoes_it(pm):
    import scipy.sparse as sp

    had = hasattr(sp.dok_matrix, "_update"), "float" in np.__dict__
    with pm.mmrec_compat():
        assert np.zeros(1, dtype=np.float).dtype == np.float64  # MMRec's ndcg_
        a = sp.dok_matrix((2, 3), dtype=np.float32)
        a._update({(0, 2): 1, (1, 0): 1})  # what FREEDOM's get_norm_adj_mat calls
        assert a.toarray().tolist() == [[0, 0, 1], [1, 0, 0]]
        import torch

        t = torch.zeros(2)
        if not torch.cuda.is_available():
            assert t.cuda() is t  # LATTICE's .cuda() calls
    assert (hasattr(sp.dok_matrix, "_update"), "float" in np.__dict__) == had


def test_without_mmrec_the_script_says_where_to_get_it(pm, capsys, tmp_path):
    with pytest.raises(pm.PeerMissing, match="MMRec"):
        pm.require_mmrec(tmp_path)
    rc = pm.main(
        ["--workspace", str(tmp_path), "--dataset", str(tmp_path / "d.yaml"), "--mmrec-src", str(tmp_path / "none")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "enoche/MMRec" in err and "pip install" in err


def test_a_missing_mmrec_import_is_named(pm, tmp_path, monkeypatch):
    code = tmp_path / "src"
    (code / "models").mkdir(parents=True)
    (code / "models" / "freedom.py").write_text("")
    (code / "utils").mkdir()
    (code / "utils" / "configurator.py").write_text("import lmdb_not_installed_here\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # require_mmrec puts src/ first: undone afterwards
    before = dict(sys.modules)
    try:
        with pytest.raises(pm.PeerMissing, match="lmdb_not_installed_here"):
            pm.require_mmrec(tmp_path)
    finally:  # the stand-in `utils` package must not outlive the test
        for name in set(sys.modules) - set(before):
            del sys.modules[name]
