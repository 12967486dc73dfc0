"""A real Prefect server on loopback, `mmrec_flows/serve.py` serving the nightly deployment on a short
interval, and a scheduled run that fires and completes, all within a bounded time.

Everything started here runs in its own process group and is stopped in `finally`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tests.conftest import FIXTURES, REPO

pytestmark = pytest.mark.integration

SERVER_START_S = 240
RUN_FIRES_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # serve pauses its schedules on SIGINT
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prefect server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"prefect server not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def champion_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A workspace whose embedded registry has a champion (a popularity model), without running the pipeline."""
    from mmrec.config import Params
    from mmrec.data.contract import load_dataset_spec
    from mmrec.data.interactions import Interactions
    from mmrec.models import create_model
    from mmrec.params.tracking import TrackingParams
    from mmrec.stages import StageContext
    from mmrec.tracking.runs import track_training

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "tiny", ws / "tiny")
    # defaults, but no feature-store refresh after the nightly run: this workspace has a champion
    # and nothing else (no split or features to export), and the test is about the schedule
    (ws / "params.yaml").write_text("features: {materialize: false}\n")
    spec = load_dataset_spec(ws / "tiny" / "dataset.yaml")
    ctx = StageContext(spec=spec, params=Params(), workspace=ws)
    users = np.array([f"u{i}" for i in range(1, 7)], dtype=object)
    items = np.array([f"i{i}" for i in range(1, 9)], dtype=object)
    m = sp.csr_matrix((np.random.default_rng(0).random((6, 8)) < 0.4).astype(np.float32))
    create_model("popularity").fit(Interactions(m, users, items)).save(ctx.paths.model_dir("popularity"))
    report = {
        "dataset": "tiny",
        "split": {"kind": "temporal", "hash": "h"},
        "selection_metric": "recall@20",
        "best_model": "popularity",
        "models": {"popularity": {"valid": {"recall@20": 0.5}, "test": {}, "params": {}}},
    }
    assert track_training(ctx, report, TrackingParams())["decision"]["action"] == "promoted"
    return ws, ws / "tiny" / "dataset.yaml"


def test_served_deployment_fires_on_its_schedule(tmp_path: Path, champion_workspace: tuple[Path, Path]):
    ws, dataset = champion_workspace
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_URI"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        OMP_NUM_THREADS="1",
    )
    bin_dir = Path(sys.executable).parent
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    server = start(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        server_log,
        tmp_path,
    )
    serve = None
    try:
        wait_healthy(api, server, server_log, SERVER_START_S)
        serve_env = {**env, "PREFECT_API_URL": api}
        serve = start(
            [
                sys.executable,
                "mmrec_flows/serve.py",
                "--dataset",
                str(dataset),
                "--params",
                str(ws / "params.yaml"),
                "--workspace",
                str(ws),
                "--only",
                "nightly-recommendations",
                "--interval",
                "5",
            ],
            serve_env,
            serve_log,
            REPO,
        )
        state = wait_for_completed_run(api, serve, serve_log, RUN_FIRES_S)
        assert state == "COMPLETED", serve_log.read_text()[-4000:]
        recs = pd.read_parquet(ws / "data" / "tiny" / "recommendations" / "latest.parquet")
        assert set(recs.user_id) == {f"u{i}" for i in range(1, 7)}
    finally:
        if serve is not None:
            stop(serve)
        stop(server)
    assert server.poll() is not None and (serve is None or serve.poll() is not None)  # nothing left running


def wait_for_completed_run(api: str, serve: subprocess.Popen, log: Path, timeout: float) -> str:
    """Poll the API until a scheduled run of the deployment finishes; its final state type."""
    import json

    body = json.dumps(
        {"deployments": {"name": {"any_": ["nightly-recommendations"]}}, "sort": "EXPECTED_START_TIME_ASC"}
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            pytest.fail(f"mmrec_flows/serve.py exited with {serve.returncode}:\n{log.read_text()[-4000:]}")
        req = urllib.request.Request(
            f"{api}/flow_runs/filter", data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.loads(r.read())
        finished = [run for run in runs if run.get("state_type") in ("COMPLETED", "FAILED", "CRASHED")]
        if finished:
            assert finished[0]["auto_scheduled"] is True  # fired by the schedule, not by hand
            return finished[0]["state_type"]
        time.sleep(2)
    pytest.fail(f"no scheduled run finished within {timeout}s:\n{log.read_text()[-4000:]}")
