"""Ingestion into the warehouse, and every kind of bad input it meets."""

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from mmrec.data.contract import load_dataset_spec
from mmrec.data.warehouse import connect, ingest_dataset, read_manifest
from mmrec.errors import ConfigError, DataError, StageError
from mmrec.paths import DatasetPaths


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(folder)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def ingest(spec_file: Path, ws: Path) -> DatasetPaths:
    spec = load_dataset_spec(spec_file)
    paths = DatasetPaths(spec.name, ws)
    ingest_dataset(spec, paths)
    return paths


def test_happy_path_and_raw_untouched(tiny_dataset, workspace):
    before = tree_digest(tiny_dataset.parent)
    paths = ingest(tiny_dataset, workspace)
    assert tree_digest(tiny_dataset.parent) == before
    inter = pd.read_parquet(paths.table("interactions"))
    assert len(inter) == 36
    assert inter["user_id"].map(type).eq(str).all()
    assert str(inter["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert inter["row_hash"].str.len().eq(40).all() and inter["row_hash"].is_unique
    items = pd.read_parquet(paths.table("items"))
    assert items.loc[0, "text"] == "name: Item 1\nkind: red\nblurb: A small thing, number 1."
    assert items.loc[0, "image"] == "img/i1.png" and items.loc[5, "image"] is None
    assert read_manifest(paths)["tables"]["users"]["rows"] == 6
    con = connect(paths, validated=False)
    assert con.execute("select count(*) from interactions").fetchone()[0] == 36


def test_row_hash_is_content_hash(tiny_dataset, workspace):
    a = pd.read_parquet(ingest(tiny_dataset, workspace / "a").table("interactions"))
    b = pd.read_parquet(ingest(tiny_dataset, workspace / "b").table("interactions"))
    assert a["row_hash"].tolist() == b["row_hash"].tolist()


def test_malformed_rows_become_rejects(tiny_dataset, workspace):
    f = tiny_dataset.parent / "interactions.csv"
    lines = f.read_text().splitlines()
    lines.insert(3, "u1,i1,1600000000,5,EXTRA")  # data row 3: one field too many
    lines.insert(5, "u2,i2")  # data row 5: too few
    f.write_text("\n".join(lines) + "\n")
    paths = ingest(tiny_dataset, workspace)
    rej = pd.read_parquet(paths.warehouse / "interactions_rejects.parquet")
    assert rej["source_row"].tolist() == [3, 5]
    assert "expected 4 fields" in rej["reason"].iloc[0] and "found 5" in rej["reason"].iloc[0]
    assert len(pd.read_parquet(paths.table("interactions"))) == 36


def test_wrong_encoding_rows_rejected_with_hint(tiny_dataset, workspace):
    f = tiny_dataset.parent / "items.csv"
    f.write_bytes(f.read_bytes() + "i9,Caf\u00e9,red,Cr\u00e8me,\n".encode("latin-1"))
    paths = ingest(tiny_dataset, workspace)
    rej = pd.read_parquet(paths.warehouse / "items_rejects.parquet")
    assert rej["source_row"].tolist() == [9]
    assert "encoding" in rej["reason"].iloc[0]


def test_unparseable_timestamp_kept_as_nat_with_raw(tiny_dataset, workspace):
    f = tiny_dataset.parent / "interactions.csv"
    f.write_text(f.read_text() + "u1,i8,yesterday,3\n")
    inter = pd.read_parquet(ingest(tiny_dataset, workspace).table("interactions"))
    bad = inter[inter["timestamp"].isna()]
    assert bad["timestamp_raw"].tolist() == ["yesterday"] and bad["source_row"].tolist() == [37]


def test_unknown_column_in_yaml_names_file_and_columns(tiny_dataset, workspace):
    tiny_dataset.write_text(tiny_dataset.read_text().replace("item_id: item,", "item_id: product,"))
    with pytest.raises(
        ConfigError, match=r"columns.item_id maps to column 'product'.*interactions.csv.*\['user', 'item'"
    ):
        ingest(tiny_dataset, workspace)


def test_empty_file_is_an_error_and_previous_warehouse_survives(tiny_dataset, workspace):
    paths = ingest(tiny_dataset, workspace)
    before = tree_digest(paths.warehouse)
    (tiny_dataset.parent / "items.csv").write_text("")
    with pytest.raises(DataError, match=r"items\.csv: file is empty"):
        ingest(tiny_dataset, workspace)
    assert tree_digest(paths.warehouse) == before
    assert not [p for p in paths.warehouse.parent.iterdir() if p.name.endswith(".tmp")]


def test_header_only_gives_empty_table(tiny_dataset, workspace):
    (tiny_dataset.parent / "users.csv").write_text("uid,country\n")
    paths = ingest(tiny_dataset, workspace)
    assert len(pd.read_parquet(paths.table("users"))) == 0


def test_missing_file(tiny_dataset, workspace):
    (tiny_dataset.parent / "users.csv").unlink()
    with pytest.raises(DataError, match=r"users\.csv: file not found"):
        ingest(tiny_dataset, workspace)


def test_parquet_and_jsonl_sources(tmp_path, workspace):
    root = tmp_path / "d"
    root.mkdir()
    pd.DataFrame({"u": ["a", "b"], "i": ["x", "y"], "t": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]}).to_parquet(
        root / "ev.parquet"
    )
    (root / "items.jsonl").write_text('{"id": "x", "title": "X"}\nnot json\n{"id": "y", "title": "Y"}\n')
    (root / "dataset.yaml").write_text(
        "name: mixed\n"
        "interactions: {path: ev.parquet, columns: {user_id: u, item_id: i, timestamp: t}, timestamp_format: iso}\n"
        "items: {path: items.jsonl, columns: {item_id: id}, text_fields: {title: title}}\n"
    )
    paths = ingest(root / "dataset.yaml", workspace)
    inter = pd.read_parquet(paths.table("interactions"))
    assert inter["timestamp"].dt.day.tolist() == [1, 2]
    assert pd.read_parquet(paths.warehouse / "items_rejects.parquet")["source_row"].tolist() == [2]


def test_manifest_missing_is_a_stage_error(workspace):
    with pytest.raises(StageError, match="run `mmrec stage ingest`"):
        read_manifest(DatasetPaths("nothing", workspace))


def test_bad_rating_keeps_raw_value(tiny_dataset, workspace):
    f = tiny_dataset.parent / "interactions.csv"
    f.write_text(f.read_text() + "u1,i8,1600009999,five\n")
    inter = pd.read_parquet(ingest(tiny_dataset, workspace).table("interactions"))
    bad = inter[inter["rating"].isna()]
    assert bad["rating_raw"].tolist() == ["five"]


def test_outputs_are_readable_by_others(tiny_dataset, workspace):
    paths = ingest(tiny_dataset, workspace)
    assert paths.table("items").stat().st_mode & 0o044 == 0o044
    assert paths.warehouse.stat().st_mode & 0o055 == 0o055


def test_epoch_timestamps_out_of_range_or_bad_become_nat():
    import pandas as pd

    from mmrec.data.adapters import epoch_to_utc

    out = epoch_to_utc(pd.Series(["1600000000", "x", "1600000000.5", "", "1e30", "-1e30", "nan"]))
    assert out.iloc[0] == pd.Timestamp("2020-09-13 12:26:40", tz="UTC")
    assert out.iloc[2] == pd.Timestamp("2020-09-13 12:26:40.5", tz="UTC")
    assert out.isna().tolist() == [False, True, False, True, True, True, True]
    assert epoch_to_utc(pd.Series([1600000000123.0]), "ms").iloc[0] == pd.Timestamp("2020-09-13 12:26:40.123", tz="UTC")
