"""Validation of the warehouse: GE suites, quarantine, cascade, table failures, media, report.

The warehouse tables are built here directly (tiny frames in the ingest layout), so these tests
do not depend on ingest; media files are the tiny ones in tests/fixtures/validation.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmrec.config import ValidateParams
from mmrec.data.adapters import epoch_to_utc
from mmrec.data.contract import DatasetSpec, load_dataset_spec
from mmrec.errors import ValidationFailed
from mmrec.paths import DatasetPaths
from mmrec.validation import ValidationReport, validate_dataset

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "validation"

SPEC_YAML = """\
name: vt
interactions:
  path: ratings.csv
  columns: {user_id: user, item_id: item, timestamp: ts, rating: stars}
items:
  path: items.csv
  columns: {item_id: id}
  text_fields: {title: title}
  media: {image: picture, audio: sound}
users:
  path: users.csv
  columns: {user_id: uid}
  attributes: [country]
"""

ITEMS = [
    # item_id  title    image           audio
    ("i1",     "One",   "media/ok.png", "media/ok.wav"),
    ("i2",     "Two",   "media/ok.png", None),
    ("i3",     "Three", None,           None),
    ("i4",     "Four",  None,           None),
    ("i5",     None,    None,           None),  # no text at all: a missing modality is fine
]  # fmt: skip
USERS = [("u1", "DE"), ("u2", "FR"), ("u3", "DE")]
INTERACTIONS = [
    # user  item  timestamp_raw  rating     (source_row = position + 1)
    ("u1", "i1", "1600000000", 5.0),  # 1
    ("u1", "i2", "1600000100", 4.0),  # 2
    ("u1", "i3", "1600000200", 3.0),  # 3
    ("u2", "i1", "1600000300", 2.0),  # 4
    ("u2", "i4", "1600000400", 5.0),  # 5
    ("u2", "i5", "1600000500", 1.0),  # 6
    ("u3", "i2", "1600000600", 4.0),  # 7
    ("u3", "i3", "1600000700", 3.0),  # 8
    ("u3", "i4", "1600000800", 2.0),  # 9
    ("u3", "i5", "1600000900", 5.0),  # 10
]  # fmt: skip


def _hash(values: tuple) -> str:
    return hashlib.sha1("\x1f".join(map(str, values)).encode()).hexdigest()


def interactions_frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_raw", "rating"])
    df[["user_id", "item_id", "timestamp_raw"]] = df[["user_id", "item_id", "timestamp_raw"]].astype(object)
    ts = epoch_to_utc(df["timestamp_raw"], "s")  # as the adapter parses them
    df.insert(2, "timestamp", ts.astype("datetime64[ns, UTC]"))
    df["rating"] = df["rating"].astype("float64")
    df["row_hash"] = [_hash(r) for r in rows]
    df["source_row"] = np.arange(1, len(df) + 1, dtype="int64")
    return df


def items_frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["item_id", "text_title", "image", "audio"], dtype=object)
    df.insert(1, "text", pd.Series([None if t is None else f"title: {t}" for t in df["text_title"]], dtype=object))
    df["row_hash"] = [_hash(r) for r in rows]
    df["source_row"] = np.arange(1, len(df) + 1, dtype="int64")
    return df


def users_frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "country"], dtype=object)
    df["row_hash"] = [_hash(r) for r in rows]
    df["source_row"] = np.arange(1, len(df) + 1, dtype="int64")
    return df


class World:
    """A dataset folder (dataset.yaml + media) and a workspace with a hand-built warehouse."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "raw"
        (self.root / "media").mkdir(parents=True)
        for f in ("ok.png", "corrupt.png", "ok.wav"):
            shutil.copy(FIX / f, self.root / "media" / f)
        (self.root / "dataset.yaml").write_text(SPEC_YAML)
        self.spec: DatasetSpec = load_dataset_spec(self.root / "dataset.yaml")
        self.paths = DatasetPaths("vt", tmp_path / "ws")
        self.items = list(ITEMS)
        self.users = list(USERS)
        self.interactions = list(INTERACTIONS)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {
            "interactions": interactions_frame(self.interactions),
            "items": items_frame(self.items),
            "users": users_frame(self.users),
        }

    def write(
        self, frames: dict[str, pd.DataFrame] | None = None, rejects: dict[str, pd.DataFrame] | None = None
    ) -> None:
        frames = frames or self.frames()
        wh = self.paths.warehouse
        if wh.exists():
            shutil.rmtree(wh)
        wh.mkdir(parents=True)
        for t, df in frames.items():
            df.to_parquet(self.paths.table(t), index=False)
        for t, df in (rejects or {}).items():
            df.to_parquet(wh / f"{t}_rejects.parquet", index=False)
        sources = {"interactions": "ratings.csv", "items": "items.csv", "users": "users.csv"}
        manifest = {
            "dataset": "vt",
            "tables": {t: {"rows": len(frames[t]), "source": str(self.root / sources[t])} for t in frames},
        }
        (wh / "manifest.json").write_text(json.dumps(manifest))

    def validate(self, **params) -> ValidationReport:
        return validate_dataset(self.spec, self.paths, ValidateParams(**params))

    def validated(self, t: str) -> pd.DataFrame:
        return pd.read_parquet(self.paths.validated_table(t))

    def quarantine(self, t: str) -> pd.DataFrame:
        return pd.read_parquet(self.paths.quarantine_table(t))

    def report_json(self) -> dict:
        return json.loads(self.paths.validation_report.read_text())


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def check_of(report: dict, table: str, name: str) -> dict:
    return next(c for c in report["tables"][table]["checks"] if c["name"] == name)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


# ---------------------------------------------------------------------------------------------


def test_happy_path(world: World) -> None:
    world.write()
    report = world.validate()
    assert report.success
    frames = world.frames()
    for t in ("interactions", "items", "users"):
        pd.testing.assert_frame_equal(world.validated(t), frames[t])
        q = world.quarantine(t)
        assert len(q) == 0
        assert list(q.columns) == [*frames[t].columns, "raw", "reason", "check"]
    media_q = world.quarantine("items_media")
    assert len(media_q) == 0 and {"item_id", "modality", "path", "reason"} <= set(media_q.columns)
    data = world.report_json()
    assert data["success"] is True
    assert data["tables"]["interactions"]["source"].endswith("ratings.csv")
    assert data["tables"]["items"]["valid_rows"] == 5  # i5 has no text and is valid
    assert data["media"]["checked"] == 3 and data["media"]["failed"] == 0  # 2 images + 1 audio
    assert "# Validation of `vt`: passed" in world.paths.validation_markdown.read_text()


def _mutate(rows: list[tuple], index: int, pos: int, value: object) -> None:
    row = list(rows[index])
    row[pos] = value
    rows[index] = tuple(row)


RowCase = tuple[str, Callable[[World], None], dict, str, list[int], str, str]
ROW_CASES: list[RowCase] = [
    # id, mutation, params, table, quarantined source rows, check, reason
    ("null_user", lambda w: _mutate(w.interactions, 3, 0, None), {},
     "interactions", [4], "user_id_not_null", "user_id is missing (null)"),
    ("empty_item", lambda w: _mutate(w.interactions, 4, 1, ""), {},
     "interactions", [5], "item_id_not_empty", "item_id '' is empty"),
    ("dup_item", lambda w: w.items.append(("i3", "Three again", None, None)), {},
     "items", [6], "item_id_unique", "duplicate item_id 'i3' (first at row 3)"),
    ("dup_user", lambda w: w.users.append(("u2", "DE")), {},
     "users", [4], "user_id_unique", "duplicate user_id 'u2' (first at row 2)"),
    ("dup_interaction", lambda w: (w.interactions.append(INTERACTIONS[0]), _strict_duplicates(w)), {},
     "interactions", [11], "duplicate_row", "as row 1"),
    ("bad_timestamp", lambda w: _mutate(w.interactions, 1, 2, "abc"), {},
     "interactions", [2], "timestamp_parses", "timestamp 'abc' does not parse"),
    ("old_timestamp", lambda w: _mutate(w.interactions, 2, 2, "315532800"), {},
     "interactions", [3], "timestamp_in_range", "outside [1990-01-01, now + validate.future_tolerance]"),
    ("old_timestamp_fixed_max", lambda w: _mutate(w.interactions, 2, 2, "315532800"), {"timestamp_max": "2100-01-01"},
     "interactions", [3], "timestamp_in_range", "outside [1990-01-01, 2100-01-01]"),
    ("future_timestamp", lambda w: _mutate(w.interactions, 2, 2, "4070908800"), {},  # 2099-01-01
     "interactions", [3], "timestamp_in_range",
     "timestamp 2099-01-01T00:00:00+00:00 (raw '4070908800') is in the future: later than the validation time + "
     "validate.future_tolerance (1 day)"),
    ("future_beyond_tolerance", lambda w: _mutate(w.interactions, 2, 2, str(int(time.time()) + 3 * 3600)),
     {"future_tolerance": "1h"}, "interactions", [3], "timestamp_in_range", "validate.future_tolerance (1h)"),
    ("nan_rating", lambda w: _mutate(w.interactions, 6, 3, float("nan")), {},
     "interactions", [7], "rating_is_number", "rating is not a number"),
    ("inf_rating", lambda w: _mutate(w.interactions, 7, 3, float("inf")), {},
     "interactions", [8], "rating_finite", "rating inf is not a finite number"),
    ("unknown_item", lambda w: _mutate(w.interactions, 8, 1, "i9"), {},
     "interactions", [9], "item_id_in_items", "item_id 'i9' not in items table"),
    ("unknown_user", lambda w: _mutate(w.interactions, 9, 0, "u9"), {},
     "interactions", [10], "user_id_in_users", "user_id 'u9' not in users table"),
    ("short_text", lambda w: _mutate(w.items, 3, 1, "X"), {"min_text_chars": 9},
     "items", [4], "text_length", "text has 8 characters, fewer than validate.min_text_chars=9"),
    ("long_text", lambda w: None, {"max_text_chars": 11},
     "items", [3], "text_length", "text has 12 characters, more than validate.max_text_chars=11"),
]  # fmt: skip


@pytest.mark.parametrize("case", ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_row_rule_quarantines_exact_rows(world: World, case: RowCase) -> None:
    _, mutate, params, table, rows, check, reason = case
    mutate(world)
    world.write()
    report = world.validate(max_quarantine_fraction=0.5, **params)
    assert report.success
    q = world.quarantine(table)
    assert q["source_row"].tolist() == rows
    assert all(check in c for c in q["check"]), q["check"].tolist()
    assert all(reason in r for r in q["reason"]), q["reason"].tolist()
    # the validated table is the warehouse minus exactly those rows, same columns
    wh = pd.read_parquet(world.paths.table(table))
    valid = world.validated(table)
    assert list(valid.columns) == list(wh.columns)
    assert sorted(valid["source_row"]) == sorted(set(wh["source_row"]) - set(rows))
    entry = check_of(world.report_json(), table, check)
    assert entry["success"] is False and entry["unexpected"] == len(rows)
    assert entry["examples"][0]["source_row"] == rows[0]
    assert world.report_json()["tables"][table]["quarantined"] == len(rows)


def test_quarantined_item_cascades_to_its_interactions(world: World) -> None:
    _mutate(world.items, 3, 1, "X")  # i4: text too short -> quarantined
    world.items.append(("i3", "Three again", None, None))  # duplicate i3: the first i3 stays valid
    world.write()
    world.validate(min_text_chars=9, max_quarantine_fraction=0.5)
    q = world.quarantine("interactions")
    assert q["source_row"].tolist() == [5, 9]  # the two interactions with i4
    # The root cause travels with the cascade: where the item was quarantined and why.
    assert set(q["reason"]) == {
        "item 'i4' quarantined (items row 4: text has 8 characters, fewer than validate.min_text_chars=9)"
    }
    assert set(q["check"]) == {"item_id_in_items"}
    valid = world.validated("interactions")
    assert "i4" not in set(valid["item_id"]) and (valid["item_id"] == "i3").sum() == 2
    assert world.validated("items")["item_id"].tolist() == ["i1", "i2", "i3", "i5"]


def test_row_failing_several_checks_is_quarantined_once(world: World) -> None:
    _mutate(world.interactions, 0, 1, "")  # empty item id: not empty + not in items
    world.write()
    world.validate()
    q = world.quarantine("interactions")
    assert q["source_row"].tolist() == [1]
    assert q.loc[0, "check"] == "item_id_not_empty, item_id_in_items"
    assert q.loc[0, "reason"] == "item_id '' is empty; item_id '' not in items table"


def test_ingest_rejects_are_folded_into_quarantine(world: World) -> None:
    rejects = pd.DataFrame({"source_row": [11], "raw": ["u1,i1"], "reason": ["malformed row: expected 4 fields"]})
    rejects["source_row"] = rejects["source_row"].astype("int64")
    world.write(rejects={"interactions": rejects})
    report = world.validate()
    q = world.quarantine("interactions")
    assert q["source_row"].tolist() == [11]
    assert q.loc[0, "check"] == "ingest_parse" and q.loc[0, "raw"] == "u1,i1"
    assert q.loc[0, "reason"] == "malformed row: expected 4 fields"
    table = report.to_dict()["tables"]["interactions"]
    assert (table["rows"], table["valid_rows"], table["quarantined"], table["ingest_rejects"]) == (11, 10, 1, 1)


def _drop_timestamp(frames: dict[str, pd.DataFrame]) -> None:
    frames["interactions"] = frames["interactions"].drop(columns=["timestamp"])


def _int_item_ids(frames: dict[str, pd.DataFrame]) -> None:
    frames["items"]["item_id"] = np.arange(len(frames["items"]))


def _empty_users(frames: dict[str, pd.DataFrame]) -> None:
    frames["users"] = frames["users"].iloc[:0]


def _many_bad_timestamps(frames: dict[str, pd.DataFrame]) -> None:
    frames["interactions"].loc[:2, "timestamp"] = pd.NaT  # 3 of 10 rows: 30% > 20%


def _all_items_unknown(frames: dict[str, pd.DataFrame]) -> None:
    frames["interactions"]["item_id"] = "nope"


TableCase = tuple[str, Callable[[dict[str, pd.DataFrame]], None], str, str | None, list[str]]
TABLE_CASES: list[TableCase] = [
    # id, breakage, table, failing column, words the exception message must contain
    ("missing_column", _drop_timestamp, "interactions", "timestamp", ["ratings.csv", "'timestamp'", "dataset.yaml"]),
    ("wrong_type", _int_item_ids, "items", "item_id", ["items.csv", "'item_id'", "int64", "ingest"]),
    ("empty_table", _empty_users, "users", None, ["users.csv", "has no rows"]),
    ("quarantine_fraction", _many_bad_timestamps, "interactions", "timestamp",
     ["ratings.csv", "'timestamp'", "rows [1, 2, 3]", "max_quarantine_fraction"]),
    ("no_valid_interactions", _all_items_unknown, "interactions", None, ["ratings.csv", "no valid interactions left"]),
]  # fmt: skip


@pytest.mark.parametrize("case", TABLE_CASES, ids=[c[0] for c in TABLE_CASES])
def test_table_level_failure_raises_writes_report_keeps_outputs(world: World, case: TableCase) -> None:
    _, breakage, table, column, words = case
    world.write()
    world.validate()  # a good run first: its outputs must survive the failed one
    before = tree_bytes(world.paths.data / "validated") | tree_bytes(world.paths.data / "quarantine")
    frames = world.frames()
    breakage(frames)
    world.write(frames)
    with pytest.raises(ValidationFailed) as exc:
        world.validate()
    message = str(exc.value)
    for word in words:
        assert word in message, (word, message)
    assert exc.value.report_path == str(world.paths.validation_report)
    data = world.report_json()
    assert data["success"] is False and data["tables"][table]["success"] is False
    failure = data["tables"][table]["failures"][0]
    source = {"interactions": "ratings.csv", "items": "items.csv", "users": "users.csv"}[table]
    assert failure["column"] == column and failure["file"] == str(world.root / source)
    assert failure["fix"]
    assert "FAILED" in world.paths.validation_markdown.read_text()
    after = tree_bytes(world.paths.data / "validated") | tree_bytes(world.paths.data / "quarantine")
    assert after == before


def test_media_failures_null_the_field_and_are_listed(world: World) -> None:
    world.items[0] = ("i1", "One", "media/corrupt.png", "media/ok.wav")
    world.items[1] = ("i2", "Two", "media/missing.png", None)
    world.items[2] = ("i3", "Three", "media/ok.png", None)
    world.write()
    report = world.validate()
    items = world.validated("items").set_index("item_id")
    assert items.loc["i1", "image"] is None and items.loc["i2", "image"] is None
    assert items.loc["i3", "image"] == "media/ok.png" and items.loc["i1", "audio"] == "media/ok.wav"
    assert len(items) == 5 and len(world.quarantine("items")) == 0  # the items themselves stay valid
    mq = world.quarantine("items_media")
    assert mq[["item_id", "modality", "path"]].values.tolist() == [
        ["i1", "image", "media/corrupt.png"],
        ["i2", "image", "media/missing.png"],
    ]
    assert "does not decode" in mq.loc[0, "reason"] and "does not exist" in mq.loc[1, "reason"]
    media = report.to_dict()["media"]
    assert (media["checked"], media["ok"], media["failed"]) == (4, 2, 2)
    assert media["modalities"]["image"]["missing"] == 1 and media["modalities"]["image"]["corrupt"] == 1
    assert any("image files failed" in w for w in report.warnings)  # 2 of 3 images: worth a look


def test_media_check_can_be_turned_off(world: World) -> None:
    world.items[1] = ("i2", "Two", "media/missing.png", None)
    world.write()
    report = world.validate(check_media=False)
    assert world.validated("items").loc[1, "image"] == "media/missing.png"
    assert report.to_dict()["media"]["enabled"] is False


def _strict_duplicates(w: World) -> None:
    """`interactions.duplicates: quarantine` (the default aggregates identical rows instead)."""
    w.spec = w.spec.model_copy(
        update={"interactions": w.spec.interactions.model_copy(update={"duplicates": "quarantine"})}
    )


def test_report_json_format(world: World) -> None:
    world.interactions.append(INTERACTIONS[0])
    _strict_duplicates(world)
    world.write()
    world.validate()
    data = world.report_json()
    assert {"dataset", "success", "tables", "media"} <= set(data)
    assert data["dataset"] == "vt" and set(data["tables"]) == {"interactions", "items", "users"}
    for table in data["tables"].values():
        assert {"source", "rows", "valid_rows", "quarantined", "checks", "failures"} <= set(table)
        assert table["rows"] == table["valid_rows"] + table["quarantined"] + table["deduplicated"]
        for c in table["checks"]:
            assert {"name", "level", "success", "unexpected", "examples", "column"} <= set(c)
            assert c["level"] in ("row", "table") and isinstance(c["success"], bool)
            assert isinstance(c["unexpected"], int)
            assert all(set(e) == {"source_row", "value"} for e in c["examples"])
    dup = check_of(data, "interactions", "duplicate_row")
    assert dup["unexpected"] == 1 and dup["examples"] == [{"source_row": 11, "value": INTERACTIONS_HASH0}]
    assert {"timestamp_type", "required_columns", "row_count", "quarantine_fraction", "item_id_in_items"} <= {
        c["name"] for c in data["tables"]["interactions"]["checks"]
    }


INTERACTIONS_HASH0 = _hash(INTERACTIONS[0])


def test_rerun_gives_identical_outputs(world: World) -> None:
    world.interactions.append(INTERACTIONS[0])
    _mutate(world.interactions, 1, 2, "abc")
    world.items[1] = ("i2", "Two", "media/missing.png", None)
    world.write()
    world.validate()
    first = (
        tree_bytes(world.paths.data / "validated")
        | tree_bytes(world.paths.data / "quarantine")
        | tree_bytes(world.paths.reports)
    )
    world.validate()
    second = (
        tree_bytes(world.paths.data / "validated")
        | tree_bytes(world.paths.data / "quarantine")
        | tree_bytes(world.paths.reports)
    )
    assert first == second
    assert {"interactions.parquet", "items.parquet", "users.parquet", "items_media.parquet", "validation.json"} <= {
        Path(k).name for k in first
    }


def test_more_than_200_bad_rows_are_all_quarantined(world: World) -> None:
    # GE caps the *values* it returns at 200 even in COMPLETE mode; every bad row must still go.
    world.interactions = [("u1", "i1", f"bad{n}", 1.0) for n in range(250)] + list(INTERACTIONS)
    world.write()
    report = world.validate(max_quarantine_fraction=1.0)
    q = world.quarantine("interactions")
    assert q["source_row"].tolist() == list(range(1, 251))
    assert (
        q["reason"].iloc[-1]
        == "timestamp 'bad249' does not parse (check interactions.timestamp_format in dataset.yaml)"
    )
    assert report.tables["interactions"].valid_rows == 10
