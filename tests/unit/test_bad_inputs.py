"""Bad data inputs, one test per case of docs/bad_inputs.md: every line is accounted for.

Each test writes a tiny dataset in tmp_path (inline, aligned so a reader can check it by eye),
breaks one thing, and checks what ingest (and, where the case is about it, validation) does:
which lines are rejected, with which reason, and that the others are read normally.
"""

from __future__ import annotations

import codecs
import json
import time
from pathlib import Path

import pandas as pd
import pytest

from mmrec.config import ValidateParams
from mmrec.data import reader
from mmrec.data.contract import load_dataset_spec
from mmrec.data.warehouse import ingest_dataset, read_manifest
from mmrec.errors import ConfigError, DataError, ValidationFailed
from mmrec.paths import DatasetPaths
from mmrec.validation import validate_dataset

T0 = 1704067200  # 2024-01-01
ITEMS = ["item_id,title,category"] + [f"i{n:02d},Item {n},{'red' if n % 2 else 'blue'}" for n in range(1, 13)]
# 48 interactions: 6 users x 8 items; data row r is file line r + 1.
INTERACTIONS = ["user_id,item_id,timestamp,rating"] + [
    f"u{u},i{(u + k) % 12 + 1:02d},{T0 + 3600 * (8 * u + k)},{1 + (u + k) % 5}" for u in range(1, 7) for k in range(8)
]


class DS:
    """A tiny dataset folder (items + interactions, no media) and a workspace."""

    def __init__(self, tmp_path: Path, inter_path: str = "interactions.csv", items_path: str = "items.csv",
                 inter_extra: str = "", items_extra: str = "") -> None:  # fmt: skip
        self.root = tmp_path / "raw"
        self.root.mkdir(exist_ok=True)
        self.inter = self.root / inter_path
        self.items = self.root / items_path
        fmt = "iso" if inter_path.endswith(".parquet") else "unix_s"
        (self.root / "dataset.yaml").write_text(
            "name: bad\n"
            f"interactions: {{path: {inter_path}, columns: {{user_id: user_id, item_id: item_id, timestamp: timestamp, "
            f"rating: rating}}, timestamp_format: {fmt}{inter_extra}}}\n"
            f"items: {{path: {items_path}, columns: {{item_id: item_id}}, text_fields: {{title: title}}, "
            f"metadata: [category]{items_extra}}}\n"
        )
        self.paths = DatasetPaths("bad", tmp_path / "ws")
        if inter_path.endswith(".csv"):
            self.write_inter(INTERACTIONS)
        if items_path.endswith(".csv"):
            self.write_items(ITEMS)

    def write_inter(self, lines: list[str], end: str = "\n", encoding: str = "utf-8") -> None:
        self.inter.write_bytes((end.join(lines) + end).encode(encoding))

    def write_items(self, lines: list[str], end: str = "\n", encoding: str = "utf-8") -> None:
        self.items.write_bytes((end.join(lines) + end).encode(encoding))

    def spec(self):
        return load_dataset_spec(self.root / "dataset.yaml")

    def ingest(self) -> DS:
        ingest_dataset(self.spec(), self.paths)
        return self

    def table(self, t: str) -> pd.DataFrame:
        return pd.read_parquet(self.paths.table(t))

    def rejects(self, t: str) -> pd.DataFrame:
        f = self.paths.warehouse / f"{t}_rejects.parquet"
        return pd.read_parquet(f) if f.is_file() else pd.DataFrame(columns=["source_row", "line", "raw", "reason"])

    def lines(self, t: str) -> dict:
        return read_manifest(self.paths)["tables"][t]["lines"]

    def validate(self, **params):
        return validate_dataset(self.spec(), self.paths, ValidateParams(check_media=False, **params))

    def quarantine(self, t: str) -> pd.DataFrame:
        return pd.read_parquet(self.paths.quarantine_table(t))


def _set(lines: list[str], line_no: int, text: str) -> list[str]:
    """Replace file line `line_no` (1-based, header = 1)."""
    out = list(lines)
    out[line_no - 1] = text
    return out


def _balanced(ds: DS, t: str, records: int) -> None:
    """Ingest's books: every line of the file is in one bucket, records = rows + rejects."""
    lines = ds.lines(t)
    assert lines["records"] == records == len(ds.table(t)) + len(ds.rejects(t))
    assert lines["header_lines"] + lines["blank_lines"] + lines["record_lines"] == lines["lines"]


# ---------------------------------------------------------------------------------------------
# Quotes, field counts, line endings.


def test_unclosed_quote_costs_exactly_its_line(tmp_path):
    """The issue's case: `u0084,"i0011,4,1704324489` on line 9 used to swallow the rest of the file."""
    ds = DS(tmp_path)
    ds.write_inter(_set(INTERACTIONS, 9, 'u2,"i04,' + str(T0) + ",4"))
    ds.ingest()
    rej = ds.rejects("interactions")
    assert rej["line"].tolist() == [9] and rej["source_row"].tolist() == [8]
    assert rej["reason"].iloc[0].startswith("line 9: unclosed quote (opened at character 4")
    assert rej["user_id"].iloc[0] == "u2" and rej["item_id"].iloc[0] is None  # only fields before the quote
    inter = ds.table("interactions")
    assert len(inter) == 47 and inter["source_row"].tolist() == [r for r in range(1, 49) if r != 8]
    _balanced(ds, "interactions", 48)
    report = ds.validate()
    t = report.to_dict()["tables"]["interactions"]
    assert (t["valid_rows"], t["quarantined"], t["accounting"]["unaccounted"]) == (47, 1, 0)
    assert next(c for c in t["checks"] if c["name"] == "line_accounting")["success"]


def test_unclosed_quote_in_items_cascades_root_cause(tmp_path):
    ds = DS(tmp_path)
    ds.write_items(_set(ITEMS, 5, 'i04,"Item 4,blue'))
    ds.ingest().validate(max_quarantine_fraction=0.5)
    assert ds.quarantine("items")["item_id"].tolist() == ["i04"]
    q = ds.quarantine("interactions")
    assert len(q) == (ds.table("interactions")["item_id"] == "i04").sum() > 0
    assert set(q["reason"]) == {
        (
            "item 'i04' quarantined (items line 5: unclosed quote (opened at character 5; no following line closes "
            "it into a record of 3 fields))"
        )
    }


def test_two_broken_lines_in_a_row_each_cost_one_line(tmp_path):
    ds = DS(tmp_path)
    lines = _set(INTERACTIONS, 9, f'u2,"i04,{T0},4')
    ds.write_inter(_set(lines, 10, f'u2,"i05,{T0},4'))  # the two quotes would pair up across lines
    ds.ingest()
    assert ds.rejects("interactions")["line"].tolist() == [9, 10]
    assert len(ds.table("interactions")) == 46
    _balanced(ds, "interactions", 48)


def test_unclosed_quote_on_last_line(tmp_path):
    ds = DS(tmp_path)
    ds.write_inter([*INTERACTIONS, f'u1,"i01,{T0},3'])
    ds.ingest()
    assert ds.rejects("interactions")["line"].tolist() == [50]
    _balanced(ds, "interactions", 49)


def test_too_many_and_too_few_fields(tmp_path):
    ds = DS(tmp_path)
    lines = _set(INTERACTIONS, 4, f"u1,i01,{T0},3,EXTRA")
    ds.write_inter(_set(lines, 7, "u1,i01"))
    ds.ingest()
    rej = ds.rejects("interactions")
    assert rej["line"].tolist() == [4, 7]
    assert "wrong field count: expected 4 fields (','-separated), found 5" in rej["reason"].iloc[0]
    assert "found 2" in rej["reason"].iloc[1]
    assert rej["user_id"].tolist() == ["u1", "u1"] and rej["item_id"].tolist() == ["i01", "i01"]
    _balanced(ds, "interactions", 48)


def test_multiline_quoted_value_is_one_record(tmp_path):
    ds = DS(tmp_path)
    items = [*ITEMS[:2], 'i02,"Item 2\nsecond line of the title",blue', *ITEMS[3:]]
    ds.write_items([*items, 'i99,"broken,red'])  # a later broken line keeps its physical line number
    ds.ingest()
    got = ds.table("items").set_index("item_id")
    assert got.loc["i02", "text_title"] == "Item 2\nsecond line of the title"
    lines = ds.lines("items")
    assert (lines["lines"], lines["records"], lines["record_lines"]) == (15, 13, 14)
    assert ds.rejects("items")["line"].tolist() == [15]


def test_literal_quote_inside_unquoted_field(tmp_path):
    ds = DS(tmp_path)
    ds.write_items(_set(ITEMS, 3, 'i02,TV 55" screen,blue'))
    ds.ingest()
    assert ds.table("items").set_index("item_id").loc["i02", "text_title"] == 'TV 55" screen'
    assert len(ds.rejects("items")) == 0


def test_tsv_unclosed_quote(tmp_path):
    ds = DS(tmp_path, inter_path="interactions.tsv")
    tsv = [x.replace(",", "\t") for x in INTERACTIONS]
    ds.write_inter(_set(tsv, 9, f'u2\t"i04\t{T0}\t4'))
    ds.ingest()
    assert ds.rejects("interactions")["line"].tolist() == [9]
    assert "unclosed quote" in ds.rejects("interactions")["reason"].iloc[0]
    _balanced(ds, "interactions", 48)


def test_crlf_line_endings(tmp_path):
    ds = DS(tmp_path)
    ds.write_inter(INTERACTIONS, end="\r\n")
    ds.write_items(ITEMS, end="\r\n")
    ds.ingest()
    inter = ds.table("interactions")
    assert len(inter) == 48 and not inter["rating_raw"].str.contains("\r").any()
    assert not ds.table("items")["category"].str.contains("\r").any()


def test_lone_carriage_return_in_unquoted_field(tmp_path):
    ds = DS(tmp_path)
    ds.write_items(_set(ITEMS, 4, "i03,Item\r3,red"))
    ds.ingest()
    rej = ds.rejects("items")
    assert rej["line"].tolist() == [4] and "carriage return" in rej["reason"].iloc[0]
    assert len(ds.table("items")) == 11


def test_blank_lines_are_counted_not_rows(tmp_path):
    ds = DS(tmp_path)
    ds.write_inter([*INTERACTIONS[:5], "", "   ", *INTERACTIONS[5:]])
    ds.ingest()
    assert ds.lines("interactions")["blank_lines"] == 2 and len(ds.table("interactions")) == 48
    _balanced(ds, "interactions", 48)


def test_all_empty_fields_row_is_quarantined_not_dropped(tmp_path):
    ds = DS(tmp_path)
    ds.write_inter(_set(INTERACTIONS, 6, ",,,"))
    ds.ingest().validate()
    q = ds.quarantine("interactions")
    assert q["source_row"].tolist() == [5] and "user_id is missing" in q["reason"].iloc[0]


# ---------------------------------------------------------------------------------------------
# Encodings and bytes.


def test_invalid_utf8_names_byte_and_cascades(tmp_path):
    ds = DS(tmp_path)
    lines = [x.encode() for x in ITEMS]
    lines[4] = "i04,Caf\u00e9 cr\u00e8me,blue".encode("latin-1")  # file line 5
    ds.items.write_bytes(b"\n".join(lines) + b"\n")
    ds.ingest().validate(max_quarantine_fraction=0.5)
    rej = ds.rejects("items")
    assert rej["reason"].iloc[0].startswith("line 5: invalid utf-8 at byte 8 (0xe9); set `encoding:`")
    assert rej["item_id"].iloc[0] == "i04" and "\ufffd" in rej["raw"].iloc[0]
    reasons = set(ds.quarantine("interactions")["reason"])
    expected = (
        "item 'i04' quarantined (items line 5: invalid utf-8 at byte 8 (0xe9); set `encoding:` for "
        "this table in dataset.yaml (e.g. latin-1, cp1252))"
    )
    assert reasons == {expected}


def test_latin1_file_with_encoding_set(tmp_path):
    ds = DS(tmp_path, items_extra=", encoding: latin-1")
    ds.write_items(_set(ITEMS, 5, "i04,Caf\u00e9,blue"), encoding="latin-1")
    ds.ingest()
    assert ds.table("items").set_index("item_id").loc["i04", "text_title"] == "Caf\u00e9"


def test_utf16_bom_file_suggests_encoding(tmp_path):
    ds = DS(tmp_path)
    ds.write_items(ITEMS, encoding="utf-16")
    with pytest.raises(DataError, match=r"items.csv: starts with a UTF-16 byte-order mark .* set `encoding: utf-16`"):
        ds.ingest()


def test_utf16_file_with_encoding_set(tmp_path):
    ds = DS(tmp_path, items_extra=", encoding: utf-16")
    ds.write_items(_set(ITEMS, 5, "i04,Caf\u00e9,blue"), encoding="utf-16")
    ds.ingest()
    items = ds.table("items").set_index("item_id")
    assert len(items) == 12 and items.loc["i04", "text_title"] == "Caf\u00e9"


def test_utf16_without_bom_is_refused_with_hint(tmp_path):
    ds = DS(tmp_path)
    ds.write_items(ITEMS, encoding="utf-16-le")
    with pytest.raises(DataError, match=r"bytes are NUL.*set `encoding: utf-16-le`"):
        ds.ingest()


def test_utf8_bom_is_not_part_of_the_header(tmp_path):
    ds = DS(tmp_path)
    ds.items.write_bytes(codecs.BOM_UTF8 + ("\n".join(ITEMS) + "\n").encode())
    ds.ingest()
    assert ds.table("items")["item_id"].iloc[0] == "i01"


def test_embedded_nul_byte(tmp_path):
    ds = DS(tmp_path)
    ds.write_inter(_set(INTERACTIONS, 3, f"u1,i0\x002,{T0},4"))
    ds.ingest()
    rej = ds.rejects("interactions")
    assert rej["line"].tolist() == [3] and "NUL byte at byte 6" in rej["reason"].iloc[0]
    _balanced(ds, "interactions", 48)


def test_unknown_encoding_name(tmp_path):
    ds = DS(tmp_path, items_extra=", encoding: klingon-8")
    with pytest.raises(ConfigError, match="unknown encoding 'klingon-8'"):
        ds.ingest()


def test_multibyte_character_split_across_read_blocks(tmp_path, monkeypatch):
    ds = DS(tmp_path)
    ds.write_items([ITEMS[0]] + [f"i{n:02d},\u00c9t\u00e9 \u2603 {n},red" for n in range(1, 40)])
    monkeypatch.setattr(reader, "BLOCK_BYTES", 7)  # every block boundary cuts lines and characters
    small = list(reader.physical_lines(ds.items, "utf-8-sig", block=7))
    assert small == list(reader.physical_lines(ds.items, "utf-8-sig"))
    ds.ingest()
    assert len(ds.table("items")) == 39 and len(ds.rejects("items")) == 0


# ---------------------------------------------------------------------------------------------
# Sizes, empty files, headers, columns.


def test_very_long_field_costs_its_line(tmp_path):
    ds = DS(tmp_path)
    ds.write_items(_set(ITEMS, 4, "i03," + "x" * 300_000 + ",red"))
    ds.ingest()
    rej = ds.rejects("items")
    assert rej["line"].tolist() == [4] and "longer than the csv limit" in rej["reason"].iloc[0]
    assert len(rej["raw"].iloc[0]) < 10_100  # the quarantine keeps a bounded prefix
    assert len(ds.table("items")) == 11


def test_empty_file(tmp_path):
    ds = DS(tmp_path)
    ds.items.write_text("\n\n")
    with pytest.raises(DataError, match=r"items.csv: file is empty"):
        ds.ingest()


def test_header_only_file_fails_validation_with_row_count(tmp_path):
    ds = DS(tmp_path)
    ds.write_inter(INTERACTIONS[:1])
    ds.ingest()
    with pytest.raises(ValidationFailed, match="has no rows"):
        ds.validate()


def test_missing_mapped_column(tmp_path):
    ds = DS(tmp_path)
    ds.write_items([x.rsplit(",", 1)[0] for x in ITEMS])  # no category column
    with pytest.raises(ConfigError, match=r"items.metadata\[0\] maps to column 'category'.*its columns are"):
        ds.ingest()


def test_cr_only_line_endings(tmp_path):
    ds = DS(tmp_path)
    ds.write_inter(INTERACTIONS, end="\r")
    with pytest.raises(DataError, match=r"interactions.csv: lines end with a bare carriage return .* convert it"):
        ds.ingest()


def test_wrong_delimiter_names_the_one_the_file_uses(tmp_path):
    ds = DS(tmp_path)
    ds.write_inter([x.replace(",", ";") for x in INTERACTIONS])
    with pytest.raises(
        ConfigError, match=r"its columns are \['user_id;item_id;timestamp;rating'\] .*set `delimiter: ';'`"
    ):
        ds.ingest()


def test_mixed_encodings_cost_only_the_odd_lines(tmp_path):
    ds = DS(tmp_path)
    data = [x.encode() for x in ITEMS]
    data[2] = "i02,Cr\u00e8me,blue".encode("cp1252")  # a cp1252 line among UTF-8 ones (one with UTF-8 accents)
    data[3] = "i03,\u00c9t\u00e9,red".encode()
    ds.items.write_bytes(b"\n".join(data) + b"\n")
    ds.ingest()
    assert ds.rejects("items")["line"].tolist() == [3]
    assert ds.table("items").set_index("item_id").loc["i03", "text_title"] == "\u00c9t\u00e9"


def test_duplicate_header_column(tmp_path):
    ds = DS(tmp_path)
    ds.write_items(["item_id,title,title", *ITEMS[1:]])
    with pytest.raises(DataError, match=r"duplicate column name\(s\) \['title'\]"):
        ds.ingest()


def test_header_with_bad_bytes(tmp_path):
    ds = DS(tmp_path)
    ds.items.write_bytes(b"item_id,t\xefitle,category\n" + "\n".join(ITEMS[1:]).encode())
    with pytest.raises(DataError, match=r"cannot read the header \(line 1\): invalid utf-8 at byte 10"):
        ds.ingest()


# ---------------------------------------------------------------------------------------------
# JSON lines and parquet.


def _jsonl(ds: DS) -> list[str]:
    return [json.dumps({"item_id": f"i{n:02d}", "title": f"Item {n}", "category": "red"}) for n in range(1, 13)]


def test_jsonl_bad_lines_cost_their_line(tmp_path):
    ds = DS(tmp_path, items_path="items.jsonl")
    lines = _jsonl(ds)
    lines[2] = '{"item_id": "i03", "title": "Item 3", '  # truncated: line 3
    lines[5] = '["i06", "Item 6"]'  # not an object: line 6
    ds.items.write_text("\n".join(lines[:8] + [""] + lines[8:]) + "\n")
    ds.ingest()
    rej = ds.rejects("items")
    assert rej["line"].tolist() == [3, 6]
    assert rej["reason"].iloc[0].startswith("line 3: invalid JSON") and "not a JSON object" in rej["reason"].iloc[1]
    assert rej["item_id"].tolist() == ["i03", None]  # recovered from the broken line where it shows
    _balanced(ds, "items", 12)
    assert ds.lines("items")["blank_lines"] == 1


def test_jsonl_invalid_utf8(tmp_path):
    ds = DS(tmp_path, items_path="items.jsonl")
    data = [x.encode() for x in _jsonl(ds)]
    data[3] = '{"item_id": "i04", "title": "Caf\u00e9"}'.encode("latin-1")
    ds.items.write_bytes(b"\n".join(data) + b"\n")
    ds.ingest()
    rej = ds.rejects("items")
    assert rej["reason"].iloc[0].startswith("line 4: invalid utf-8 at byte 33 (0xe9)")
    assert rej["item_id"].iloc[0] == "i04"


def test_parquet_rows_are_accounted(tmp_path):
    ds = DS(tmp_path, inter_path="interactions.parquet")
    df = pd.DataFrame([x.split(",") for x in INTERACTIONS[1:]], columns=INTERACTIONS[0].split(","))
    df["timestamp"] = pd.to_datetime(df["timestamp"].astype(int), unit="s", utc=True).astype(str)
    df.to_parquet(ds.inter, row_group_size=10)  # several row groups, streamed
    ds.ingest()
    _balanced(ds, "interactions", 48)
    t = ds.validate().to_dict()["tables"]["interactions"]
    assert t["accounting"]["source_rows"] == 48 and t["accounting"]["unaccounted"] == 0


def test_corrupt_parquet_names_the_file(tmp_path):
    ds = DS(tmp_path, inter_path="interactions.parquet")
    df = pd.DataFrame([x.split(",") for x in INTERACTIONS[1:]], columns=INTERACTIONS[0].split(","))
    df.to_parquet(ds.inter)
    data = bytearray(ds.inter.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    ds.inter.write_bytes(bytes(data[: len(data) - 20]))  # damaged and truncated footer
    with pytest.raises(DataError, match=r"interactions.parquet: cannot read parquet file \(corrupt or not parquet"):
        ds.ingest()


# ---------------------------------------------------------------------------------------------
# Timestamps and the accounting check itself.


def test_far_future_timestamp_is_quarantined(tmp_path):
    ds = DS(tmp_path)
    soon = int(time.time()) + 3600  # within the default 1-day tolerance: fine
    lines = _set(INTERACTIONS, 3, "u1,i03,4070908800,4")  # 2099-01-01
    ds.write_inter(_set(lines, 4, f"u1,i04,{soon},4"))
    ds.ingest().validate()
    q = ds.quarantine("interactions")
    assert q["source_row"].tolist() == [2]
    assert "is in the future: later than the validation time + validate.future_tolerance (1 day)" in q["reason"].iloc[0]


def test_lost_rows_fail_validation(tmp_path):
    ds = DS(tmp_path).ingest()
    f = ds.paths.warehouse / "manifest.json"
    manifest = json.loads(f.read_text())
    manifest["tables"]["interactions"]["source_rows"] = 60  # the source had 12 rows more than arrived
    f.write_text(json.dumps(manifest))
    with pytest.raises(ValidationFailed, match=r"rows were lost between .*interactions.csv and") as info:
        ds.validate()
    assert "12 unaccounted" in str(info.value)
    data = json.loads(ds.paths.validation_report.read_text())
    assert data["tables"]["interactions"]["accounting"]["unaccounted"] == 12
    assert (
        next(c for c in data["tables"]["interactions"]["checks"] if c["name"] == "line_accounting")["success"] is False
    )
    assert "| interactions |" in ds.paths.validation_markdown.read_text()


def test_recommend_users_file_with_a_stray_quote_fails_loudly(tmp_path):
    """`mmrec recommend --users FILE`: pandas would swallow the lines after the quote (no recs, no error)."""
    from mmrec.recommend.id_files import read_user_ids

    f = tmp_path / "users.csv"
    f.write_text('user_id,segment\nu1,a\nu2,"b\nu3,c\nu4,d\n')
    with pytest.raises(DataError, match=r"users.csv: 1 unreadable line\(s\), e.g. line 3: unclosed quote"):
        read_user_ids(f)
    f.write_text('user_id,segment\nu1,a\nu2,"b, c"\n')
    assert read_user_ids(f) == ["u1", "u2"]
