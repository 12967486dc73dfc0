"""A corrupt or read-only MLflow store: `registry` / `promote` print one line naming it and the fix, exit 2."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mmrec.cli import handle_errors
from mmrec.tracking.store import store_error
from tests.conftest import FIXTURES
from tests.unit.test_tracking_cli import cli  # noqa: F401 - the lifecycle commands as a fixture

DATASET = str(FIXTURES / "tiny" / "dataset.yaml")


def _invoke(app: typer.Typer, ws: Path, *args: str):
    common = ["--dataset", DATASET, "--workspace", str(ws), "--params", str(ws / "none.yaml")]
    return CliRunner().invoke(app, [*args, *common])


@pytest.mark.parametrize("command", ["registry", "promote"])
def test_corrupt_mlflow_db_is_one_line_exit_2(cli: typer.Typer, tmp_path: Path, monkeypatch, command: str):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not sqlite\x00" * 300)
    res = _invoke(cli, tmp_path, command)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert f"MLflow store {db} is corrupt" in res.output and "file is not a database" in res.output
    assert "mv " in res.output and "tracking.uri" in res.output


def test_read_only_sqlite_error_names_store_and_fix(tmp_path: Path):
    db = tmp_path / "mlflow.db"
    sqlite3.connect(db).execute("create table t (x int)").connection.commit()
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as info:  # a real read-only failure, as root too
        ro.execute("insert into t values (1)")
    err = store_error(f"sqlite:///{db}", info.value)
    assert err is not None
    assert str(err).startswith(f"MLflow store {db} is read-only (attempt to write a readonly database)")
    assert "chmod u+w" in str(err)


def test_other_errors_are_not_store_errors():
    assert store_error("sqlite:///x.db", ValueError("bad parameter")) is None
    assert store_error("http://mlflow:5000", ConnectionError("refused")) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files; covered by the sqlite-level test")
def test_read_only_mlflow_db_promote_exit_2(cli: typer.Typer, tmp_path: Path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    db.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        res = _invoke(cli, tmp_path, "promote")
    finally:
        tmp_path.chmod(0o755)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert f"MLflow store {db}" in res.output


def test_handle_errors_turns_store_error_into_exit_2():
    from mmrec.errors import TrackingStoreError

    @handle_errors
    def boom() -> None:
        raise TrackingStoreError("MLflow store x.db is corrupt (...); fix: ...")

    with pytest.raises(typer.Exit) as info:
        boom()
    assert info.value.exit_code == 2
