"""The per-modality ablation: the random-vector control, variant names, verdicts."""

import numpy as np
import pytest

from mmrec.ablation import Variant, control_of, parse_variants, sentence, variant_params, verdict
from mmrec.errors import ConfigError, DataError
from mmrec.models.item_features import random_control_features

RNG = np.random.default_rng(0)
FEATS = {"text": RNG.normal(3.0, 0.5, (6, 4)).astype(np.float32), "image": RNG.random((6, 3)).astype(np.float32)}
MASKS = {"text": np.array([1, 1, 0, 1, 1, 1], bool), "image": np.array([1, 0, 1, 1, 0, 1], bool)}
FEATS["text"][~MASKS["text"]] = 0
FEATS["image"][~MASKS["image"]] = 0


def test_random_control_keeps_dims_and_masks_and_differs_from_features():
    f, m = random_control_features(FEATS, MASKS, seed=1)
    for mod in FEATS:
        assert f[mod].shape == FEATS[mod].shape and f[mod].dtype == np.float32
        np.testing.assert_array_equal(m[mod], MASKS[mod])
        assert (f[mod][~MASKS[mod]] == 0).all()  # missing stays missing, never a fake vector
        assert (np.abs(f[mod][MASKS[mod]]) > 0).all()
        assert not np.allclose(f[mod], FEATS[mod])
        # no item information survives: the control is uncorrelated with the real vectors
    # same seed, same vectors; another seed, other vectors
    f2, _ = random_control_features(FEATS, MASKS, seed=1)
    f3, _ = random_control_features(FEATS, MASKS, seed=2)
    np.testing.assert_array_equal(f["text"], f2["text"])
    assert not np.allclose(f["text"], f3["text"])


def test_random_control_matches_the_scale_of_the_features():
    big = {"text": np.random.default_rng(1).normal(5.0, 2.0, (4000, 3)).astype(np.float32)}
    f, _ = random_control_features(big, {"text": np.ones(4000, bool)}, seed=0)
    assert f["text"].mean() == pytest.approx(5.0, abs=0.1)
    assert f["text"].std() == pytest.approx(2.0, abs=0.1)
    assert abs(np.corrcoef(f["text"][:, 0], big["text"][:, 0])[0, 1]) < 0.05


def test_random_control_needs_masks():
    with pytest.raises(DataError, match="presence mask"):
        random_control_features(FEATS, {"text": MASKS["text"]}, seed=0)
    with pytest.raises(DataError, match="do not line up"):
        random_control_features({"text": FEATS["text"]}, {"text": np.ones(3, bool)}, seed=0)


def test_parse_variants():
    vs = parse_variants(["text", "image", "all", "random_text", "random"], ["text", "image"])
    assert vs[0] == Variant("text", ("text",))
    assert vs[2] == Variant("all", ("text", "image"))
    assert vs[3] == Variant("random_text", ("text",), ("text",))
    assert vs[4] == Variant("random", ("text", "image"), ("text", "image"))
    assert control_of(vs[0], vs) == vs[3]
    assert control_of(vs[2], vs) == vs[4]
    assert control_of(vs[1], vs) is None  # no random_image configured
    for bad in (["smell"], ["text", "text"], [], ["random_smell"]):
        with pytest.raises(ConfigError, match="variants"):
            parse_variants(bad, ["text"])


def test_variant_params_drop_weights_of_absent_modalities():
    p = variant_params({"k": 5, "weights": {"text": 1.0, "image": 0.5}}, Variant("image", ("image",)))
    assert p == {"k": 5, "weights": {"image": 0.5}, "modalities": ["image"]}


def test_verdicts_and_sentences():
    ci = {"ratio": 1.3, "low": 1.1, "high": 1.5, "confidence": 0.95}
    assert verdict(ci) == "adds"
    assert "adds +0.0300" in sentence("text", "random_text", "test", "recall@20", 0.13, 0.10, ci)
    flat = {"ratio": 1.02, "low": 0.95, "high": 1.08, "confidence": 0.95}
    assert verdict(flat) == "nothing"
    text = sentence("image", "random_image", "cold", "recall@20", 0.1, 0.098, flat)
    assert "adds nothing beyond the random control" in text and "the cold slice" in text
    assert verdict({"ratio": 0.8, "low": 0.7, "high": 0.9}) == "worse"
    assert verdict({"ratio": None}) == "nothing"
