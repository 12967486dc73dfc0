"""Forgetting a user end to end: nothing the platform wrote may still hold the id afterwards.

A distinctive user is added to a copy of the tiny fixture's raw data (valid interactions, a
profile row, and one interaction with an unknown item, which validation quarantines and reports).
The whole training pipeline, the nightly run and the API run; the user is forgotten (the CLI in
the embedded profile, `DELETE /users/{id}` in the production profile); then every file under the
workspace (and the API's log), every table of the PostgreSQL databases and every key of the
Redis the profile uses are searched for the id: binary-safe, and decoded where the format hides
it (parquet pages, npz members, gzip, sqlite incl. free pages). Only the raw folder (never
modified, by design) may hold it, and only the audit record may hold the pseudonym. The user must
be unknown to the API, and a pipeline re-run must not bring them back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmrec.privacy.scan import bytes_mention, file_mentions, walk_files
from tests.conftest import FIXTURES
from tests.integration.servers import ApiProcess
from tests.integration.test_production_profile import fast_mlflow_client, production_env  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

USER = "zzForgetMe42"  # distinctive: no other id or string of the platform contains it
PARAMS = """\
profile: {profile}
split:
  min_user_interactions: 1
validate:
  max_quarantine_fraction: 0.5
extract:
  progress: false
  text: {{encoder: tiny_text}}
  image: {{encoder: tiny_cnn}}
train:
  models: [popularity, itemknn, bpr]
  params:
    bpr: {{max_epochs: 4, eval_every: 2, min_epochs: 1}}
tracking:
  uri: {tracking_uri}
orchestrate:
  retries: 0
"""


def make_workspace(root: Path, profile: str = "embedded", tracking_uri: str = "null") -> tuple[str, str, str]:
    """The tiny fixture plus USER: 6 interactions, a profile row, one row naming an unknown item."""
    root.mkdir(parents=True, exist_ok=True)
    raw = root / "tiny"
    shutil.copytree(FIXTURES / "tiny", raw)
    rows = "".join(f"{USER},i{j},{1600002000 + 10 * j},{j % 5 + 1}\n" for j in range(1, 7))
    with (raw / "interactions.csv").open("a") as fh:
        fh.write(rows + f"{USER},i999,1600002100,3\n")
    with (raw / "users.csv").open("a") as fh:
        fh.write(f"{USER},DE\n")
    (root / "params.yaml").write_text(PARAMS.format(profile=profile, tracking_uri=tracking_uri))
    return str(raw / "dataset.yaml"), str(root / "params.yaml"), str(root)


def holding(roots: list[Path], needle: str, skip: list[Path]) -> list[str]:
    # any substring, not only whole tokens: binary formats glue ids to other bytes
    return [str(f) for f in walk_files(roots, skip) if file_mentions(f, needle, whole=False)]


def cli(*args: str) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).parent / "mmrec")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=600, env=dict(os.environ))


def api_call(api: ApiProcess, method: str, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{api.url}{path}",
        method=method,
        data=b"{}" if method == "POST" else None,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def audit_records(ws: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (ws / "privacy" / "tiny" / "audit.jsonl").read_text().splitlines()]


def check_nothing_left(ws: Path, extra: list[Path]) -> None:
    raw = ws / "tiny"
    left = holding([ws, *extra], USER, skip=[raw])
    assert left == [], f"files still holding the forgotten id: {left}"
    pseudonym = audit_records(ws)[-1]["pseudonym"]
    with_pseudonym = holding([ws, *extra], pseudonym, skip=[raw])
    assert sorted(Path(p).name for p in with_pseudonym) == ["audit.jsonl", "forget.json"], with_pseudonym
    assert all(Path(p).parent == ws / "privacy" / "tiny" for p in with_pseudonym)


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


def test_forget_embedded_cli_then_pipeline_rerun(tmp_path: Path, harness: None, monkeypatch: pytest.MonkeyPatch):
    from mmrec_flows.nightly import run_nightly
    from mmrec_flows.training import run_training

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dataset, params, ws_s = make_workspace(tmp_path / "ws")
    ws = Path(ws_s)
    state = run_training(dataset, params, ws_s)
    assert state.is_completed(), state.message
    nightly = run_nightly(dataset, params, ws_s, k=3)
    assert nightly.is_completed(), nightly.message
    # The scanner sees the user where the platform put it (else "nothing left" would prove nothing).
    before = {str(Path(p).relative_to(ws)) for p in holding([ws], USER, skip=[ws / "tiny"])}
    for expected in (
        "data/tiny/warehouse/interactions.parquet",
        "data/tiny/validated/users.parquet",
        "data/tiny/quarantine/interactions.parquet",
        "data/tiny/splits/temporal/train.tsv",
        "data/tiny/recommendations/latest.parquet",
        "data/tiny/feast/sqlite/online.db",
        "artifacts/tiny/models/bpr/state.npz",
    ):
        assert expected in before, sorted(before)
    assert any(p.startswith("mlruns/") and p.endswith("state.npz") for p in before), sorted(before)

    api = ApiProcess(dataset, params, ws_s, tmp_path)
    try:
        api.start()
        status, body = api.get(f"/users/{USER}/recommendations?k=3")
        assert status == 200 and body["items"], body

        done = cli("forget", "--dataset", dataset, "--params", params, "--workspace", ws_s, "--user", USER, "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        record = json.loads(done.stdout)
        assert record["complete"] and record["known"] and USER not in done.stdout
        assert record["removed"]["warehouse"] == {"interactions": 7, "users": 1}, record["removed"]
        assert record["removed"]["models"]["artifacts"] == 3 and record["removed"]["models"]["mlflow"] >= 1
        assert record["removed"]["online_store"]["rows"] > 0 and record["removed"]["recommendations"]["rows"] > 0

        # the running API reloads (the forget list changed, the version did not) and no longer knows the user
        status, body = api_call(api, "POST", "/admin/reload")
        assert status == 200 and body["action"] == "loaded", body
        for path in (f"/users/{USER}/recommendations?k=3", f"/users/{USER}/history"):
            status, body = api.get(path)
            assert status == 404, (path, status, body)
        assert api.get("/users/u1/recommendations?k=3")[0] == 200  # everyone else still served
    finally:
        api.kill()
    check_nothing_left(ws, [tmp_path / "api.log"])

    again = cli("forget", "--dataset", dataset, "--params", params, "--workspace", ws_s, "--user", USER, "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout)
    assert second["complete"] and not second["known"]  # idempotent: nothing left to remove
    assert len(audit_records(ws)) == 2

    # Raw data untouched; the next pipeline run drops the user at ingest and counts it.
    assert USER in (ws / "tiny" / "interactions.csv").read_text()
    state = run_training(dataset, params, ws_s)
    assert state.is_completed(), state.message
    report = json.loads((ws / "reports" / "tiny" / "validation.json").read_text())
    assert report["tables"]["interactions"]["forgotten"] == 7 and report["tables"]["users"]["forgotten"] == 1
    assert report["tables"]["interactions"]["accounting"]["unaccounted"] == 0
    check_nothing_left(ws, [])


# -- production profile: Redis online store, MLflow + Prefect on PostgreSQL ------------------------


def pg_rows_holding(url: str, needle: str) -> list[str]:
    """Every table of a PostgreSQL database whose rows (as text, bytea as hex too) hold `needle`."""
    import psycopg

    hits = []
    url = url.replace("postgresql+psycopg://", "postgresql://").replace("postgresql+asyncpg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table in tables:
            n = conn.execute(
                f'SELECT count(*) FROM "{schema}"."{table}" t WHERE t::text LIKE %s OR t::text LIKE %s',
                (f"%{needle}%", f"%{needle.encode().hex()}%"),
            ).fetchone()[0]
            if n:
                hits.append(f"{schema}.{table}: {n} rows")
    return hits


def redis_keys_holding(url: str, needle: str) -> list[str]:
    """Every key of a Redis database whose name or value (any type) holds `needle`."""
    import redis

    r = redis.Redis.from_url(url)
    hits = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        values: list[bytes] = []
        if kind == "string":
            values = [r.get(key) or b""]
        elif kind == "hash":
            values = [x for kv in r.hgetall(key).items() for x in kv]
        elif kind == "list":
            values = list(r.lrange(key, 0, -1))
        elif kind == "set":
            values = list(r.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [x for _, fields in r.xrange(key) for kv in fields.items() for x in kv]
        if bytes_mention(key, needle, whole=False) or any(bytes_mention(v, needle, whole=False) for v in values):
            hits.append(repr(key))
    return hits


def wait_for_redis_persistence(url: str, timeout: float = 60) -> None:
    import time

    import redis

    r = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = r.info("persistence")
        if not (
            info.get("aof_rewrite_in_progress")
            or info.get("aof_rewrite_scheduled")
            or info.get("rdb_bgsave_in_progress")
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"Redis still rewriting its files after {timeout}s")


@pytest.mark.services
def test_forget_production_profile_via_delete(
    tmp_path: Path, production_env: dict[str, str], mlflow_pg_server: Any, private_redis: Any, prefect_pg_database: str
):
    """Production profile (tests/integration/test_production_profile.py): every endpoint from the
    environment, Prefect + MLflow on PostgreSQL, a Dask worker, Feast on Redis."""
    from mmrec_flows.nightly import run_nightly
    from mmrec_flows.training import run_training

    dataset, params, ws_s = make_workspace(tmp_path / "ws", profile="production")
    ws = Path(ws_s)
    state = run_training(dataset, params, ws_s)
    assert state.is_completed(), state.message
    assert state.result()["features"]["profile"] == "redis"
    nightly = run_nightly(dataset, params, ws_s, k=3)
    assert nightly.is_completed(), nightly.message
    server_artifacts = tmp_path / "server-artifacts"
    mlflow_db = next(a for a in mlflow_pg_server.cmd if a.startswith("postgresql"))
    assert redis_keys_holding(private_redis.url, USER), "the user never reached Redis: the test would prove nothing"
    assert holding([server_artifacts], USER, skip=[]), "the user never reached the MLflow server's artifacts"

    api = ApiProcess(dataset, params, ws_s, tmp_path)
    try:
        api.start()
        assert api.get(f"/users/{USER}/recommendations?k=3")[0] == 200
        status, body = api_call(api, "DELETE", f"/users/{USER}")
        assert status == 200 and body["status"] == "forgotten" and body["known"], body
        assert body["removed"]["online_store_redis"]["keys"] >= 1 and body["removed"]["models"]["mlflow"] >= 1, body
        assert body["reloaded"] == "loaded" and USER not in json.dumps(body)
        assert api.get(f"/users/{USER}/recommendations?k=3")[0] == 404  # this process forgot at once
        status, body = api_call(api, "DELETE", f"/users/{USER}")  # idempotent
        assert status == 200 and not body["known"], body
    finally:
        api.kill()

    wait_for_redis_persistence(private_redis.url)  # the forget started an AOF rewrite: old writes leave the files
    check_nothing_left(ws, [tmp_path / "api.log", server_artifacts, tmp_path / "redis-data"])
    assert redis_keys_holding(private_redis.url, USER) == []
    assert pg_rows_holding(mlflow_db, USER) == []
    assert pg_rows_holding(prefect_pg_database, USER) == []

    state = run_training(dataset, params, ws_s)  # the re-run does not bring the user back
    assert state.is_completed(), state.message
    check_nothing_left(ws, [server_artifacts])
    assert redis_keys_holding(private_redis.url, USER) == []


# -- DVC: stale cache objects go, dvc.lock follows the rewritten outputs ----------------------------


def dvc(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def test_dvc_cache_objects_holding_the_user_are_deleted_and_the_lock_recommitted(tiny_dataset: Path, tmp_path: Path):
    from mmrec.config import load_params
    from mmrec.context import StageContext
    from mmrec.data.contract import load_dataset_spec
    from mmrec.privacy import erasers

    ws = tmp_path / "repo"
    ws.mkdir()
    (ws / "raw.tsv").write_text(
        "user_id\titem_id\n" + "".join(f"{u}\ti{j}\n" for u in ("u1", USER, "u2") for j in (1, 2))
    )
    (ws / "dvc.yaml").write_text(
        "stages:\n  copy:\n    cmd: mkdir -p out && cp raw.tsv out/train.tsv\n    deps: [raw.tsv]\n    outs: [out]\n"
    )
    dvc(ws, "init", "--no-scm", "-q")
    dvc(ws, "repro", "-q")
    ctx = StageContext(spec=load_dataset_spec(tiny_dataset), params=load_params(None), workspace=ws)
    cache = ws / ".dvc" / "cache"
    assert holding([cache], USER, skip=[])  # the stage's output was cached with the user in it
    assert erasers.filter_tsv(ws / "out" / "train.tsv", USER) == 2  # what the file erasers do first

    counts = erasers.erase_dvc_cache(ctx, USER)
    assert counts["objects"] >= 1 and counts["committed_stages"] == 1 and counts["not_committed"] == 0, counts
    assert holding([cache], USER, skip=[]) == []
    assert "up to date" in dvc(ws, "status")  # dvc.lock points at the rewritten, cached output
    dvc(ws, "checkout", "--force")  # and a checkout restores the clean file, not the old one
    assert USER not in (ws / "out" / "train.tsv").read_text() and "u1\ti1" in (ws / "out" / "train.tsv").read_text()
    assert erasers.erase_dvc_cache(ctx, USER)["objects"] == 0  # idempotent

    # raw data edited since the last repro: the lock is not re-committed (that would hide the due re-run)
    (ws / "raw.tsv").write_text((ws / "raw.tsv").read_text() + "u3\ti1\n")
    assert erasers.erase_dvc_cache(ctx, USER)["committed_stages"] == 0
    assert "changed deps" in dvc(ws, "status")
