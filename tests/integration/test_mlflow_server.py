"""The same tracking/registry code against a real `mlflow server` on loopback.

Backend store: PostgreSQL on 127.0.0.1:5432 (a throw-away database created and dropped here);
artifacts: served by the MLflow server (proxied), so the client never touches the server's disk.
Skipped locally without PostgreSQL; a failure in CI (MMREC_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import FIXTURES, require_service

pytestmark = [pytest.mark.integration, pytest.mark.services]

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
SERVER_START_S = 240


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the MLflow backend store, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    psycopg = pytest.importorskip("psycopg")
    name = f"mmrec_mlflow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mlflow_server(pg_database: str, tmp_path: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_URI")}
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        pg_database,
        "--artifacts-destination",
        str(tmp_path / "server-artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up after {SERVER_START_S}s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_registry_lifecycle_against_a_server(mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mmrec.config import Params
    from mmrec.data.contract import load_dataset_spec
    from mmrec.data.interactions import Interactions
    from mmrec.models import create_model
    from mmrec.params.tracking import TrackingParams
    from mmrec.stages import StageContext
    from mmrec.tracking.registry import load_champion, registry_state, rollback
    from mmrec.tracking.runs import track_training

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = tmp_path / "ws"
    ctx = StageContext(spec=load_dataset_spec(FIXTURES / "tiny" / "dataset.yaml"), params=Params(), workspace=ws)
    tp = TrackingParams(uri=mlflow_server, margin=0.01)
    users = np.array([f"u{i}" for i in range(1, 7)], dtype=object)
    items = np.array([f"i{i}" for i in range(1, 9)], dtype=object)

    def train(seed: int, recall: float) -> dict:
        m = sp.csr_matrix((np.random.default_rng(seed).random((6, 8)) < 0.5).astype(np.float32))
        create_model("popularity").fit(Interactions(m, users, items)).save(ctx.paths.model_dir("popularity"))
        report = {
            "dataset": "tiny",
            "split": {"kind": "temporal", "hash": f"h{seed}"},
            "selection_metric": "recall@20",
            "best_model": "popularity",
            "models": {"popularity": {"valid": {"recall@20": recall}, "test": {}, "params": {}}},
        }
        return track_training(ctx, report, tp)

    first = train(1, 0.30)
    assert first["tracking_uri"] == mlflow_server and first["decision"]["action"] == "promoted"
    assert train(2, 0.50)["decision"]["action"] == "promoted"
    assert train(3, 0.505)["decision"]["action"] == "refused"  # inside the margin
    assert registry_state(ctx, tp)["aliases"] == {"champion": "2", "challenger": "3"}
    assert rollback(ctx, tp).version == "1"
    model, info = load_champion(ctx, tp=tp)  # artifacts come back through the server
    assert info["version"] == "1" and list(model.item_ids) == list(items)
    assert not (ws / "mlflow.db").exists() and not (ws / "mlruns").exists()  # nothing embedded was used
