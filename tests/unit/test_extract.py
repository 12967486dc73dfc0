"""The extract stage on a tiny catalogue: feature files, report, cache, incremental runs, crashes, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mmrec.constants import ITEM_ID
from mmrec.data.contract import DatasetSpec
from mmrec.encoders import ExtractParams, read_features
from mmrec.encoders.store import FeatureCache
from mmrec.errors import ConfigError, StageError
from mmrec.extract import extract_modality, extraction_report_path
from mmrec.paths import DatasetPaths

MEDIA = Path(__file__).resolve().parents[1] / "fixtures" / "media"

TEXTS = {
    "i1": "title: Toy Story\ngenres: Animation\ndescription: A cowboy doll and a <b>spaceman</b>.",
    "i2": "title: Heat\ngenres: Crime\ndescription: A thief and a detective in Los Angeles.",
    "i3": None,  # no text: missing, not a failure
    "i4": "   ",  # empty: failure
    "i5": "title: \ufffd\ufffd\ufffd\ufffd\ufffd",  # non-UTF-8 bytes decoded leniently: failure
    "i6": "x" * 5000,  # huge (above the test's max_chars): failure
}
IMAGES = {"i1": "ok.png", "i2": "cmyk.jpg", "i3": None, "i4": "truncated.jpg", "i5": "bomb.png", "i6": "missing.png"}
AUDIO = {
    "i1": "low_tone.wav",
    "i2": "tone.m4a",
    "i3": None,
    "i4": "silent.wav",
    "i5": "empty.wav",
    "i6": "unsupported_codec.wav",
}
VIDEO = {"i1": "ok.mp4", "i2": None, "i3": None, "i4": "no_frames.mp4", "i5": "audio_only.mp4", "i6": None}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def params(**over) -> ExtractParams:
    raw = {
        "device": "cpu",
        "workers": 2,
        "progress": False,
        "text": {"encoder": "tiny_text", "batch_size": 2, "max_chars": 1000},
        "image": {"encoder": "tiny_cnn", "batch_size": 2},
        "audio": {"encoder": "logmel", "batch_size": 2},
        "video": {"encoder": "frames", "image_encoder": "tiny_cnn", "num_frames": 3, "batch_size": 2},
    }
    for k, v in over.items():
        if isinstance(v, dict):
            raw[k] = {**raw.get(k, {}), **v}
        else:
            raw[k] = v
    return ExtractParams.model_validate(raw)


def make_dataset(tmp_path: Path, ids=("i1", "i2", "i3", "i4", "i5", "i6"), media_kinds=("image", "audio", "video")):
    root = tmp_path / "raw"
    (root / "media").mkdir(parents=True, exist_ok=True)
    for f in MEDIA.iterdir():
        if f.suffix != ".py":
            shutil.copy(f, root / "media" / f.name)
    spec = DatasetSpec.model_validate(
        {
            "name": "tinymm",
            "interactions": {"path": "i.csv", "columns": {"user_id": "u", "item_id": "i", "timestamp": "t"}},
            "items": {
                "path": "items.csv",
                "columns": {"item_id": "id"},
                "text_fields": {"title": "title"},
                "media": {m: m for m in media_kinds},
            },
        }
    ).model_copy(update={"resolved_root": str(root)})
    paths = DatasetPaths("tinymm", tmp_path / "ws")
    write_items(paths, ids, media_kinds)
    return spec, paths


def write_items(paths: DatasetPaths, ids, media_kinds=("image", "audio", "video"), images=None):
    rows = {ITEM_ID: list(ids), "text": [TEXTS.get(i, f"title: item {i}") for i in ids]}
    for kind, table in (("image", images or IMAGES), ("audio", AUDIO), ("video", VIDEO)):
        if kind in media_kinds:
            default = "ok.png" if kind == "image" else None
            rows[kind] = [f"media/{table.get(i, default)}" if table.get(i, default) else None for i in ids]
    paths.validated.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(paths.validated_table("items"), index=False)


def reasons(entry) -> dict[str, str]:
    return {f["item_id"]: f["reason"] for f in entry["failures"]}


# ---- one run per modality ---------------------------------------------------------------------


def test_image_features_file_report_and_failures(tmp_path):
    spec, paths = make_dataset(tmp_path)
    entry = extract_modality(spec, paths, "image", params())
    assert (entry["items"], entry["encoded"], entry["cached"], entry["missing"], entry["failed"]) == (6, 2, 0, 1, 3)
    r = reasons(entry)
    assert "corrupt or truncated JPEG" in r["i4"] and "decompression bomb" in r["i5"] and "file not found" in r["i6"]
    assert entry["items_per_second"] > 0 and entry["seconds"] > 0

    out = paths.features("image", "tiny_cnn")
    table = pq.read_table(out)
    assert table.column_names == ["item_id", "vector"]
    assert str(table.schema.field("vector").type) == "list<element: float>"
    feats = read_features(out)
    assert feats.item_ids == ["i1", "i2"] and feats.matrix.shape == (2, 16) and feats.matrix.dtype == np.float32
    assert feats.meta["encoder"] == "tiny_cnn" and feats.meta["preprocessing"]["fit"] == "pad"
    assert len(feats.meta["weights_hash"]) == 64 and feats.meta["cache_key"] == entry["cache_key"]
    aligned, mask = feats.aligned(["i2", "i3", "i1"])
    assert mask.tolist() == [True, False, True] and not aligned[1].any()

    report = json.loads(extraction_report_path(paths).read_text())
    assert report["dataset"] == "tinymm" and report["modalities"]["image"]["tiny_cnn"]["failed"] == 3
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert len(sidecar["failures"]) == 3


def test_text_audio_video_failures_are_recorded_and_the_run_continues(tmp_path):
    spec, paths = make_dataset(tmp_path)
    text = extract_modality(spec, paths, "text", params())
    assert (text["encoded"], text["missing"], text["failed"]) == (2, 1, 3)
    r = reasons(text)
    assert "empty after cleaning" in r["i4"] and "mostly undecodable" in r["i5"] and "max_chars=1000" in r["i6"]

    audio = extract_modality(spec, paths, "audio", params())
    assert (audio["encoded"], audio["missing"], audio["failed"]) == (2, 1, 3)
    r = reasons(audio)
    assert "silent" in r["i4"] and "no samples" in r["i5"] and "unsupported codec" in r["i6"]
    assert read_features(paths.features("audio", "logmel")).matrix.shape == (2, 188)

    video = extract_modality(spec, paths, "video", params())
    assert video["encoder"] == "frames_tiny_cnn"
    assert (video["encoded"], video["missing"], video["failed"]) == (1, 3, 2)
    r = reasons(video)
    assert "no decodable frames" in r["i4"] and "no video stream" in r["i5"]

    report = json.loads(extraction_report_path(paths).read_text())
    assert set(report["modalities"]) == {"text", "audio", "video"}  # entries merged, none lost
    assert report["modalities"]["video"]["frames_tiny_cnn"]["failure_kinds"]


# ---- cache: re-runs, added items, crashes -----------------------------------------------------


def test_second_run_does_no_work_and_loads_no_model(tmp_path, monkeypatch):
    from mmrec.encoders.tiny import TinyCNNEncoder

    spec, paths = make_dataset(tmp_path)
    first = extract_modality(spec, paths, "image", params())
    before = read_features(paths.features("image", "tiny_cnn"))

    def boom(self):
        raise AssertionError("the model must not be built when everything is cached")

    monkeypatch.setattr(TinyCNNEncoder, "build_model", boom)
    monkeypatch.setattr(TinyCNNEncoder, "weights_hash", lambda self: first["weights_hash"])
    second = extract_modality(spec, paths, "image", params())
    assert (second["encoded"], second["cached"], second["failed"]) == (0, 2, 3)
    # Decoding failures are remembered by content hash (not re-decoded); a missing file is
    # looked for again, since it may have appeared.
    assert {f["item_id"]: f["cached"] for f in second["failures"]} == {"i4": True, "i5": True, "i6": False}
    after = read_features(paths.features("image", "tiny_cnn"))
    assert after.item_ids == before.item_ids
    np.testing.assert_array_equal(after.matrix, before.matrix)


def test_adding_items_encodes_only_the_new_ones(tmp_path):
    ids = [f"n{i}" for i in range(10)]
    images = {i: ("ok.png" if k % 2 else "cmyk.jpg") for k, i in enumerate(ids)}
    spec, paths = make_dataset(tmp_path, ids=ids[:4], media_kinds=("image",))
    write_items(paths, ids[:4], ("image",), images)
    extract_modality(spec, paths, "text", params())
    # Ten new items with new texts: ten encoded; the four old ones come from the cache.
    more = ids + [f"m{i}" for i in range(10)]
    write_items(paths, more, ("image",), {**images, **{f"m{i}": "palette.png" for i in range(10)}})
    entry = extract_modality(spec, paths, "text", params())
    assert (entry["encoded"], entry["cached"]) == (16, 4)
    feats = read_features(paths.features("text", "tiny_text"))
    assert feats.item_ids == more


def test_same_content_is_encoded_once(tmp_path):
    ids = [f"d{i}" for i in range(6)]
    spec, paths = make_dataset(tmp_path, ids=ids, media_kinds=("image",))
    write_items(paths, ids, ("image",), {i: "ok.png" for i in ids})
    entry = extract_modality(spec, paths, "image", params())
    assert (entry["encoded"], entry["cached"]) == (1, 5)
    feats = read_features(paths.features("image", "tiny_cnn"))
    assert len(feats.item_ids) == 6 and np.allclose(feats.matrix, feats.matrix[0])


def test_changing_preprocessing_re_encodes_under_a_new_key(tmp_path):
    spec, paths = make_dataset(tmp_path, media_kinds=("image",))
    a = extract_modality(spec, paths, "image", params())
    b = extract_modality(spec, paths, "image", params(image={"fit": "crop"}))
    assert a["cache_key"] != b["cache_key"] and b["encoded"] == 2
    c = extract_modality(spec, paths, "image", params())
    assert c["encoded"] == 0  # the first key's cache is still there


class Crash(BaseException):
    """Stands for a kill mid-run (not an Exception: the runner must not swallow it)."""


def test_a_crash_mid_run_resumes_without_re_encoding(tmp_path, monkeypatch):
    from mmrec.encoders.tiny import TinyTextEncoder

    ids = [f"c{i}" for i in range(9)]
    spec, paths = make_dataset(tmp_path, ids=ids, media_kinds=())
    real = TinyTextEncoder.encode_batch
    calls = {"n": 0}

    def crashing(self, prepared):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash()
        return real(self, prepared)

    monkeypatch.setattr(TinyTextEncoder, "encode_batch", crashing)
    p = params(text={"batch_size": 2}, checkpoint_items=2)
    with pytest.raises(Crash):
        extract_modality(spec, paths, "text", p)
    assert not paths.features("text", "tiny_text").exists()  # no half-written output
    monkeypatch.setattr(TinyTextEncoder, "encode_batch", real)
    entry = extract_modality(spec, paths, "text", p)
    assert (entry["cached"], entry["encoded"]) == (4, 5)  # two batches survived the crash
    assert read_features(paths.features("text", "tiny_text")).item_ids == ids


def test_model_failure_on_one_item_is_isolated(tmp_path, monkeypatch):
    from mmrec.encoders.tiny import TinyTextEncoder

    ids = [f"x{i}" for i in range(5)]
    spec, paths = make_dataset(tmp_path, ids=ids, media_kinds=())
    original = TinyTextEncoder.prepare

    def poisoned(self, raw):  # token id -1 makes the EmbeddingBag raise for this item only
        return np.array([-1]) if "item x2" in raw else original(self, raw)

    monkeypatch.setattr(TinyTextEncoder, "prepare", poisoned)
    entry = extract_modality(spec, paths, "text", params(text={"batch_size": 5}))
    assert (entry["encoded"], entry["failed"]) == (4, 1)
    assert reasons(entry) == {"x2": "the model failed on this item (see the log)"}
    assert read_features(paths.features("text", "tiny_text")).item_ids == ["x0", "x1", "x3", "x4"]


def test_systematic_model_failure_raises(tmp_path, monkeypatch):
    from mmrec.encoders.tiny import TinyTextEncoder
    from mmrec.errors import ModelError

    spec, paths = make_dataset(tmp_path, ids=["a", "b"], media_kinds=())

    def broken(self, prepared):
        raise RuntimeError("wrong weights")

    monkeypatch.setattr(TinyTextEncoder, "encode_batch", broken)
    with pytest.raises(ModelError, match="fails on every item: wrong weights"):
        extract_modality(spec, paths, "text", params())


def test_cache_shards_are_compacted_and_survive_reload(tmp_path):
    cache = FeatureCache(tmp_path / "c", {"k": 1})
    for i in range(20):
        cache.put(f"h{i}", np.full(3, i, np.float32))
        cache.flush()
    cache.put_failure("bad", "corrupt")
    cache.compact(max_shards=4)
    assert len(list((tmp_path / "c").glob("vectors-*.parquet"))) == 1
    again = FeatureCache(tmp_path / "c")
    assert len(again) == 20 and float(again.vectors["h7"][0]) == 7.0 and again.failures == {"bad": "corrupt"}
    (tmp_path / "c" / "vectors-99999999999999999999-broken.parquet").write_bytes(b"not parquet")
    assert len(FeatureCache(tmp_path / "c")) == 20  # a damaged shard is skipped, not fatal


# ---- stage plumbing ---------------------------------------------------------------------------


def test_undeclared_modality_is_a_no_op_that_says_so(tmp_path, caplog):
    spec, paths = make_dataset(tmp_path, media_kinds=("image",))
    with caplog.at_level("INFO", logger="mmrec.extract"):
        entry = extract_modality(spec, paths, "audio", params())
    assert entry["declared"] is False and entry["encoded"] == 0 and "declares no audio" in entry["skipped"]
    assert not paths.features("audio", "logmel").exists()  # no empty file for the models to trip on
    assert (paths.data / "features" / "audio" / "SKIPPED.json").is_file()  # DVC's output folder exists
    assert any("skipped" in r.getMessage() and "declares no audio" in r.getMessage() for r in caplog.records)
    report = json.loads(extraction_report_path(paths).read_text())
    assert "audio" not in report["modalities"] and "declares no audio" in report["skipped"]["audio"]


def test_missing_validated_table_and_bad_config(tmp_path):
    spec, paths = make_dataset(tmp_path)
    with pytest.raises(ConfigError, match="unknown modality"):
        extract_modality(spec, paths, "smell", params())
    with pytest.raises(ConfigError, match="is a image encoder"):
        extract_modality(spec, paths, "text", params(text={"encoder": "tiny_cnn"}))
    with pytest.raises(ConfigError, match="has no weights"):
        extract_modality(spec, paths, "audio", params(audio={"weights": "/tmp"}))
    paths.validated_table("items").unlink()
    with pytest.raises(StageError, match="run `mmrec stage validate` first"):
        extract_modality(spec, paths, "image", params())


def test_params_can_be_the_whole_params_object(tmp_path):
    spec, paths = make_dataset(tmp_path, media_kinds=("image",))

    class Whole:
        extract = params()

    assert extract_modality(spec, paths, "image", Whole())["encoded"] == 2
    with pytest.raises(ConfigError, match="expected ExtractParams"):
        extract_modality(spec, paths, "image", object())
