"""Media decode checks on tiny real files (no great_expectations involved)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from mmrec.data.contract import load_dataset_spec
from mmrec.validation.media import check_file, check_media

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "validation"


@pytest.mark.parametrize(
    ("name", "modality"),
    [("ok.png", "image"), ("ok.wav", "audio"), ("ok.mp4", "video")],
)
def test_good_files_decode(name: str, modality: str) -> None:
    assert check_file(FIX / name, modality, name) is None


@pytest.mark.parametrize(
    ("name", "modality", "check", "words"),
    [
        ("corrupt.png", "image", "media_decodes", ["'corrupt.png' does not decode", "truncated"]),
        ("missing.png", "image", "media_exists", ["'missing.png' does not exist"]),
        ("ok.png", "audio", "media_decodes", ["'ok.png' does not decode"]),
        ("ok.wav", "video", "media_decodes", ["'ok.wav' does not decode"]),
    ],
)
def test_bad_files_are_named_with_a_reason(name: str, modality: str, check: str, words: list[str]) -> None:
    result = check_file(FIX / name, modality, name)
    assert result is not None
    assert result[0] == check
    for w in words:
        assert w in result[1]


def test_check_media_skips_uris_and_nulls_failures(tmp_path: Path) -> None:
    shutil.copy(FIX / "ok.mp4", tmp_path / "clip.mp4")
    (tmp_path / "dataset.yaml").write_text(
        "name: m\ninteractions: {path: r.csv, columns: {user_id: u, item_id: i, timestamp: t}}\n"
        "items: {path: i.csv, columns: {item_id: id}, media: {video: v}}\n"
    )
    spec = load_dataset_spec(tmp_path / "dataset.yaml")
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "video": ["clip.mp4", "https://example.com/x.mp4", None, "gone.mp4"],
            "source_row": pd.Series([1, 2, 3, 4], dtype="int64"),
        }
    )
    result = check_media(spec, items, workers=2)
    assert result.items["video"].tolist() == ["clip.mp4", "https://example.com/x.mp4", None, None]
    assert result.summary["video"] == {
        "checked": 2,
        "ok": 1,
        "failed": 1,
        "missing": 1,
        "corrupt": 0,
        "skipped_uris": 1,
    }
    assert result.quarantine[["item_id", "source_row", "path", "check"]].values.tolist() == [
        ["d", 4, "gone.mp4", "media_exists"]
    ]
    assert items["video"].tolist()[3] == "gone.mp4"  # the input frame is not modified
