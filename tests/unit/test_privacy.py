"""Forgetting a user, store by store (mmrec.privacy): the forget list and ingest filter, each eraser,
the audit log, the scanner, and a forget that fails midway and is re-run."""

from __future__ import annotations

import gzip
import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mmrec.config import load_params
from mmrec.context import StageContext
from mmrec.data.contract import load_dataset_spec
from mmrec.data.warehouse import ingest_dataset
from mmrec.errors import DataError
from mmrec.paths import DatasetPaths
from mmrec.privacy import erasers
from mmrec.privacy.audit import append_audit, audit_path, read_audit
from mmrec.privacy.forget_list import ForgetList, drop_forgotten, drop_forgotten_rejects, pseudonym
from mmrec.privacy.scan import data_mentions, file_mentions


def forget_list(ws: Path, *users: str) -> ForgetList:
    fl = ForgetList.load(DatasetPaths("tiny", ws), create=True)
    for u in users:
        fl.add(u)
    return fl


# -- forget list -------------------------------------------------------------------------------------


def test_forget_list_holds_keyed_pseudonyms_only(tmp_path: Path):
    fl = forget_list(tmp_path, "alice@example.com", "alice@example.com")  # added twice: once
    folder = tmp_path / "privacy" / "tiny"
    stored = json.loads((folder / "forget.json").read_text())
    assert len(stored["pseudonyms"]) == 1 and stored["scheme"] == "hmac-sha256"
    assert b"alice" not in (folder / "forget.json").read_bytes()
    assert (folder / "salt").stat().st_mode & 0o077 == 0  # the salt is private
    assert stored["pseudonyms"][0] == pseudonym(fl.salt, "alice@example.com")  # type: ignore[arg-type]
    assert pseudonym(b"x" * 32, "alice@example.com") != stored["pseudonyms"][0]  # keyed: another salt, another digest
    again = ForgetList.load(DatasetPaths("tiny", tmp_path))
    assert "alice@example.com" in again and "alice" not in again and "bob" not in again
    assert again.mask(["bob", "alice@example.com", None]) == [False, True, False]


def test_empty_list_matches_nothing_and_a_lost_salt_is_an_error(tmp_path: Path):
    empty = ForgetList.load(DatasetPaths("tiny", tmp_path))
    assert "u1" not in empty and len(empty) == 0 and not (tmp_path / "privacy").exists()  # reading creates nothing
    forget_list(tmp_path, "u1")
    (tmp_path / "privacy" / "tiny" / "salt").unlink()
    with pytest.raises(DataError, match="no salt"):
        ForgetList.load(DatasetPaths("tiny", tmp_path))


def test_drop_forgotten_rows_and_rejects_whole_ids_only(tmp_path: Path):
    fl = forget_list(tmp_path, "u1")
    frame = pd.DataFrame({"user_id": ["u1", "u10", "u2", "u1"], "item_id": ["a", "b", "c", "d"]})
    kept, n = drop_forgotten(frame, "user_id", fl)
    assert n == 2 and kept["user_id"].tolist() == ["u10", "u2"]
    rejects = pd.DataFrame(
        {"source_row": [3, 4, 5], "raw": ["u1,i5,notatime", "u10,i5,bad", '"u1";x'], "reason": ["r"] * 3}
    )
    kept, n = drop_forgotten_rejects(rejects, fl)
    assert n == 2 and kept["raw"].tolist() == ["u10,i5,bad"]


def test_ingest_drops_forgotten_users_and_validation_accounts_for_them(tiny_dataset: Path, workspace: Path):
    from mmrec.validation import validate_dataset

    spec = load_dataset_spec(tiny_dataset)
    paths = DatasetPaths(spec.name, workspace)
    forget_list(workspace, "u1")
    raw_before = (tiny_dataset.parent / "interactions.csv").read_bytes()
    report = ingest_dataset(spec, paths).to_dict()
    n_u1 = raw_before.decode().count("\nu1,")
    assert n_u1 > 0 and report["tables"]["interactions"]["forgotten"] == n_u1
    assert report["tables"]["users"]["forgotten"] == 1 and report["tables"]["items"]["forgotten"] == 0
    assert "u1" not in set(pd.read_parquet(paths.table("interactions"))["user_id"])
    assert "u1" not in set(pd.read_parquet(paths.table("users"))["user_id"])
    assert (tiny_dataset.parent / "interactions.csv").read_bytes() == raw_before  # raw data never modified
    validation = validate_dataset(spec, paths).to_dict()
    inter = validation["tables"]["interactions"]
    assert inter["forgotten"] == n_u1 and inter["accounting"]["unaccounted"] == 0 and validation["success"]
    assert validation["tables"]["users"]["accounting"]["unaccounted"] == 0


# -- file erasers --------------------------------------------------------------------------------------


def test_filter_tsv_keeps_other_lines_byte_for_byte(tmp_path: Path):
    f = tmp_path / "train.tsv"
    f.write_bytes(b"user_id\titem_id\ttimestamp\nu1\ti1\t1\nu10\ti2\t2\nu2\ti1\t3\nu1\ti3\t4\n")
    assert erasers.filter_tsv(f, "u1") == 2
    assert f.read_bytes() == b"user_id\titem_id\ttimestamp\nu10\ti2\t2\nu2\ti1\t3\n"
    assert erasers.filter_tsv(f, "u1") == 0  # idempotent


def test_filter_parquet_and_redact_text(tmp_path: Path):
    f = tmp_path / "latest.parquet"
    pd.DataFrame({"user_id": ["u1", "u10", "u1"], "item_id": ["a", "b", "c"], "rank": [1, 1, 2]}).to_parquet(f)
    assert file_mentions(f, "u1")
    assert erasers.filter_parquet(f, "u1") == 2 and not file_mentions(f, "u1")
    assert pd.read_parquet(f)["user_id"].tolist() == ["u10"] and pd.read_parquet(f)["rank"].dtype == np.int64
    rep = tmp_path / "validation.json"
    rep.write_text(json.dumps({"examples": [{"user_id": "u1"}, {"user_id": "u10"}], "note": "u1 twice: u1"}))
    assert erasers.redact_text(rep, "u1") == 3
    body = json.loads(rep.read_text())  # still valid JSON
    assert body["examples"] == [{"user_id": "[forgotten]"}, {"user_id": "u10"}]


def _saved_bpr(folder: Path) -> Path:
    from mmrec.data.interactions import Interactions
    from mmrec.models import create_model

    m = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=np.float32))
    train = Interactions(m, np.array(["u1", "u2", "u10"], dtype=object), np.array(["a", "b", "c", "d"], dtype=object))
    model = create_model("bpr", dim=4, max_epochs=1, eval_every=1, min_epochs=1, seed=0).fit(train)
    return model.save(folder)


def test_forget_in_state_removes_the_users_row_and_nothing_else(tmp_path: Path):
    from mmrec.models import load_model

    folder = _saved_bpr(tmp_path / "bpr")
    before = load_model(folder)
    assert erasers.forget_in_state(folder / "state.npz", "u1") == 1
    assert erasers.forget_in_state(folder / "state.npz", "u1") == 0  # idempotent
    assert not file_mentions(folder / "state.npz", "u1") and file_mentions(folder / "state.npz", "u10")
    after = load_model(folder)
    assert list(after.user_ids) == ["u2", "u10"]
    np.testing.assert_array_equal(after.user_factors, before.user_factors[1:])
    np.testing.assert_array_equal(after.item_factors, before.item_factors)
    np.testing.assert_array_equal(after.train_matrix.toarray(), before.train_matrix.toarray()[1:])
    assert not list(folder.glob(".state.*"))  # no temporary file left behind


def test_online_sqlite_deletes_exactly_the_users_entity_rows_and_vacuums(tiny_dataset: Path, workspace: Path):
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    ctx = StageContext(spec=load_dataset_spec(tiny_dataset), params=load_params(None), workspace=workspace)
    db = ctx.paths.data / "feast" / "sqlite" / "online.db"
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE mmrec_tiny_user_stats (entity_key BLOB, feature_name TEXT, value BLOB)")
    for uid in ("u1", "u10", "u2"):
        key = serialize_entity_key(
            EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=uid)]), entity_key_serialization_version=3
        )
        con.executemany("INSERT INTO mmrec_tiny_user_stats VALUES (?, ?, ?)", [(key, "n", b"1"), (key, "m", b"2")])
    con.commit()
    con.close()
    assert erasers.erase_online_sqlite(ctx, "u1") == {"rows": 2}
    assert erasers.erase_online_sqlite(ctx, "u1") == {"rows": 0}
    assert sqlite3.connect(db).execute("SELECT count(*) FROM mmrec_tiny_user_stats").fetchone() == (4,)
    assert not file_mentions(db, "u1")  # VACUUMed: not even in a free page


# -- scanner, audit, a forget that fails midway ----------------------------------------------------------


def test_scanner_finds_ids_that_compression_hides(tmp_path: Path):
    buf = io.BytesIO()
    np.savez_compressed(buf, user_ids=np.array(["u10", "u1"]))
    assert b"u1" not in buf.getvalue()  # deflated UTF-32: a plain byte search finds nothing
    assert data_mentions(buf.getvalue(), "u1") and not data_mentions(buf.getvalue(), "u2")
    assert data_mentions(gzip.compress(b"x u1 y" * 100), "u1") and not data_mentions(b"u10 u11", "u1")
    pq = io.BytesIO()
    pd.DataFrame({"user_id": ["zzu1"] * 500, "other": ["zzu10"] * 500}).to_parquet(pq, compression="zstd")
    assert data_mentions(pq.getvalue(), "zzu1") and not data_mentions(pq.getvalue(), "zzu")


def test_audit_is_append_only(tmp_path: Path):
    paths = DatasetPaths("tiny", tmp_path)
    append_audit(paths, {"pseudonym": "a", "n": 1})
    first = audit_path(paths).read_bytes()
    append_audit(paths, {"pseudonym": "b", "n": 2})
    assert audit_path(paths).read_bytes().startswith(first)
    assert [r["pseudonym"] for r in read_audit(paths)] == ["a", "b"]


def test_a_failed_store_is_reported_and_a_rerun_finishes(
    tiny_dataset: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
):
    from mmrec.privacy import forget

    ctx = StageContext(spec=load_dataset_spec(tiny_dataset), params=load_params(None), workspace=workspace)
    ingest_dataset(ctx.spec, ctx.paths)
    calls = []

    def broken(ctx: StageContext, user_id: str) -> dict[str, int]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(f"disk full while rewriting the file of {user_id}")
        return {"rows": 0}

    monkeypatch.setattr(forget, "ERASERS", [("warehouse", erasers.erase_warehouse), ("flaky", broken)])
    first = forget.forget_user(ctx, "u1")
    assert not first.complete and "flaky" in first.failed and "u1" not in first.failed["flaky"]
    assert first.removed["warehouse"]["interactions"] > 0
    second = forget.forget_user(ctx, "u1")
    assert second.complete and second.removed["warehouse"] == {"rows": 0}
    records = read_audit(ctx.paths)
    assert [r["complete"] for r in records] == [False, True]
    assert b"u1" not in audit_path(ctx.paths).read_bytes().replace(b"u10", b"")
    assert "u1" not in set(pd.read_parquet(ctx.paths.table("interactions"))["user_id"])
    manifest = json.loads((ctx.paths.warehouse / "manifest.json").read_text())
    assert manifest["tables"]["interactions"]["forgotten"] == first.removed["warehouse"]["interactions"]


def test_bad_user_id_is_refused(tiny_dataset: Path, workspace: Path):
    from mmrec.privacy.forget import forget_user

    ctx = StageContext(spec=load_dataset_spec(tiny_dataset), params=load_params(None), workspace=workspace)
    with pytest.raises(DataError, match="--user"):
        forget_user(ctx, "a\nb")
    assert not (workspace / "privacy").exists()
