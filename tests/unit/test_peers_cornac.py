"""benchmarks/peers_cornac.py without Cornac: its input (interaction triples, the content matrix) and
the message when cornac is missing. The helpers it shares with peers_mmrec.py (id mapping, slices,
choice, grids) are tested in test_peers_common.py."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.unit.test_peers_common import _frames, loaded_script


@pytest.fixture(scope="module")
def pc():
    with loaded_script("peers_cornac.py", "peers_cornac") as module:
        yield module


def test_interaction_triples_drop_the_timestamp_and_rate_every_row_one(pc):
    f = _frames()
    assert pc.interaction_triples(f["valid"], f["test"]) == [
        ("u0", "w2", 1.0),
        ("u1", "w0", 1.0),
        ("u0", "w3", 1.0),
        ("u1", "w1", 1.0),
    ]


def test_content_matrix_concatenates_modalities_with_zeros_for_absent_vectors(pc):
    text = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], dtype=np.float32)
    image = np.array([[5.0], [7.0], [9.0]], dtype=np.float32)
    masks = {"text": np.array([True, True, True]), "image": np.array([True, False, True])}
    raw = pc.content_matrix({"text": text, "image": image}, masks, "raw", ["text", "image"])
    assert raw.tolist() == [[1.0, 0.0, 5.0], [0.0, 2.0, 0.0], [3.0, 3.0, 9.0]]
    centred = pc.content_matrix({"text": text, "image": image}, masks, "centred", ["text", "image"])
    assert np.allclose(np.linalg.norm(centred[:, :2], axis=1), 1.0)
    assert centred[1, 2] == 0.0 and abs(centred[0, 2]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="raw"):
        pc.content_matrix({"text": text}, masks, "pca", ["text"])


def test_without_cornac_the_script_names_the_missing_package(pc, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "cornac", None)  # `import cornac` now raises ImportError
    with pytest.raises(pc.PeerMissing, match="cornac"):
        pc.require_cornac()
    rc = pc.main(["--workspace", str(tmp_path), "--dataset", str(tmp_path / "dataset.yaml"), "--models", "bpr"])
    err = capsys.readouterr().err
    assert rc == 2 and "cornac" in err and "pip install" in err
