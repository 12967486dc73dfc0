"""The production profile against real servers on loopback, and what happens when one is lost.

- Prefect server on PostgreSQL (`prefect_api`, tests/integration/conftest.py), MLflow server on
  PostgreSQL with proxied artifacts, a Dask scheduler with a worker process, a private Redis
  (tests/integration/servers.py): `profile: production` takes every endpoint from the
  environment, the training pipeline and the nightly run go through all of them end to end on
  the tiny fixture, with tiny seeded encoders.
- Fault: the MLflow server is SIGKILLed in the middle of the registration task. The run fails
  with a message naming the server and what state it left; after a restart the registry holds no
  version without its artifacts and the champion alias has not moved; the next run completes.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import FIXTURES
from tests.integration.servers import ApiProcess

pytestmark = [pytest.mark.integration, pytest.mark.services]

PARAMS = """\
profile: {profile}
split:
  min_user_interactions: 1
extract:
  progress: false
  text: {{encoder: tiny_text}}
  image: {{encoder: tiny_cnn}}
train:
  models: {models}
tracking:
  uri: {tracking_uri}
features:
  materialize: {materialize}
orchestrate:
  retries: 1
  retry_delay_seconds: 0
"""


def workspace(
    root: Path,
    profile: str = "production",
    models: str = "[popularity, itemknn]",
    tracking_uri: str = "null",
    materialize: bool = True,
) -> tuple[str, str, str]:
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "tiny").exists():
        shutil.copytree(FIXTURES / "tiny", root / "tiny")
    (root / "params.yaml").write_text(
        PARAMS.format(profile=profile, models=models, tracking_uri=tracking_uri, materialize=str(materialize).lower())
    )
    return str(root / "tiny" / "dataset.yaml"), str(root / "params.yaml"), str(root)


@pytest.fixture
def fast_mlflow_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLflow client retries: a dead server fails the request at once (default: minutes of back-off)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


@pytest.fixture
def production_env(
    use_prefect_api: str,
    mlflow_pg_server: Any,
    private_redis: Any,
    fast_mlflow_client: None,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """The production profile's variables (mmrec.config.PRODUCTION_ENV) and a Dask cluster behind them.

    The variables are set before the Dask worker process starts, so it inherits them, as a
    container inherits its environment in infra/.
    """
    from distributed import LocalCluster

    from tests.integration.servers import free_port

    port = free_port()
    env = {
        "MLFLOW_TRACKING_URI": mlflow_pg_server.url,
        "PREFECT_API_URL": use_prefect_api,
        "MMREC_REDIS_URL": private_redis.url,
        "DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{port}",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", host="127.0.0.1", scheduler_port=port
    ) as cluster:
        assert cluster.scheduler_address == env["DASK_SCHEDULER_ADDRESS"]
        yield env


def server_state(state: Any) -> tuple[str, str]:
    """(flow name, state type) of a finished flow run, read back from the Prefect server."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        flow = client.read_flow(run.flow_id)
    return flow.name, run.state_type.value


def test_pipeline_nightly_and_api_on_real_servers_survive_a_redis_restart(
    tmp_path: Path,
    production_env: dict[str, str],
    private_redis: Any,
):
    from mmrec.config import load_params
    from mmrec.data.contract import load_dataset_spec
    from mmrec.stages import StageContext
    from mmrec.tracking.registry import load_champion, registry_state
    from mmrec_flows.nightly import run_nightly
    from mmrec_flows.training import run_training

    mlflow_url = production_env["MLFLOW_TRACKING_URI"]
    dataset, params, ws = workspace(tmp_path / "ws")
    p = load_params(params)  # the profile resolves every endpoint from the environment
    assert (p.profile, p.tracking.uri, p.orchestrate.task_runner, p.orchestrate.dask_address) == (
        "production",
        mlflow_url,
        "dask",
        production_env["DASK_SCHEDULER_ADDRESS"],
    )

    training = run_training(dataset, params, ws)
    assert training.is_completed(), training.message
    result = training.result()
    assert sorted(result["extraction"]) == ["image", "text"]
    encoded = {m: v["encoded"] for m, v in result["extraction"].items()}
    assert encoded == {"text": 8, "image": 3}, result["extraction"]  # 3 of the 8 tiny items have a picture
    assert result["registry"]["tracking_uri"] == mlflow_url
    assert result["registry"]["decision"]["action"] == "promoted"
    assert result["features"]["profile"] == "redis"  # materialized into the production online store
    import redis

    online = redis.Redis.from_url(production_env["MMREC_REDIS_URL"])
    after_training = online.dbsize()
    assert after_training > 0

    nightly = run_nightly(dataset, params, ws, k=3)
    assert nightly.is_completed(), nightly.message
    recs = pd.read_parquet(Path(ws) / "data" / "tiny" / "recommendations" / "latest.parquet")
    assert set(recs.user_id) == {f"u{i}" for i in range(1, 7)}  # every user, at most k unseen items each
    assert recs.groupby("user_id").size().between(1, 3).all() and not recs.duplicated(["user_id", "item_id"]).any()
    assert nightly.result()["features"]["profile"] == "redis" and online.dbsize() >= after_training

    # Everything went through the servers, nothing through an embedded store.
    ctx = StageContext(spec=load_dataset_spec(dataset), params=p, workspace=Path(ws))
    reg = registry_state(ctx)
    assert reg["tracking_uri"] == mlflow_url and reg["aliases"] == {"champion": "1"}
    model, info = load_champion(ctx)  # artifacts come back through the MLflow server
    assert info["version"] == "1" and sorted(model.item_ids) == sorted(f"i{i}" for i in range(1, 9))
    assert not (Path(ws) / "mlflow.db").exists() and not (Path(ws) / "mlruns").exists()
    assert server_state(training) == ("training-pipeline", "COMPLETED")  # recorded by the PostgreSQL-backed server
    assert server_state(nightly) == ("nightly-recommendations", "COMPLETED")

    # The API on the same stack; Redis restarts under it and it recovers without a restart.
    api = ApiProcess(dataset, params, ws, tmp_path)
    try:
        api.start()
        status, body = api.get("/users/u1/recommendations?k=3")
        assert status == 200 and body["source"] == "precomputed", body
        before = body["items"]
        pid = api.proc.pid

        private_redis.kill()  # SIGTERM: Redis writes its AOF and exits
        status, body = api.get("/users/u1/recommendations?k=3")
        assert status == 503, (status, body)  # a clear, retryable answer, not a 500
        assert body["error"] == "service_unavailable" and "redis" in body["detail"].lower(), body
        assert api.get("/health")[0] == 200  # liveness unaffected: no restart wanted

        private_redis.start()  # same port, same data
        status, body = api.get_until_ok("/users/u1/recommendations?k=3", timeout=30)
        assert status == 200 and body["source"] == "precomputed" and body["items"] == before, body
        assert api.proc.pid == pid and api.alive()  # the same process recovered by itself
    finally:
        api.kill(signal.SIGTERM)


def test_mlflow_server_lost_mid_registration_leaves_nothing_half_registered(
    tmp_path: Path,
    use_prefect_api: str,
    mlflow_pg_server: Any,
    fast_mlflow_client: None,
    monkeypatch: pytest.MonkeyPatch,
):
    import mlflow
    from mlflow import MlflowClient

    import mmrec.tracking.runs as tracking
    from mmrec_flows.training import run_training

    server, name = mlflow_pg_server, "mmrec-tiny"
    dataset, params, ws = workspace(
        tmp_path / "ws", profile="embedded", models="[popularity]", tracking_uri=server.url, materialize=False
    )
    state = run_training(dataset, params, ws, extract=False)
    assert state.is_completed(), state.message
    assert state.result()["registry"]["decision"]["action"] == "promoted"  # v1: the champion

    # Second run, another best model (new content hash); the server dies while its model uploads.
    workspace(tmp_path / "ws", profile="embedded", models="[itemknn]", tracking_uri=server.url, materialize=False)
    real_log_pyfunc = tracking.log_pyfunc
    kills: list[int] = []

    def log_pyfunc_after_server_death(folder: Path) -> Any:
        if not kills:
            kills.append(server.proc.pid)
            server.kill()  # SIGKILL: no graceful shutdown, as when a node disappears
        return real_log_pyfunc(folder)

    monkeypatch.setattr(tracking, "log_pyfunc", log_pyfunc_after_server_death)
    state = run_training(dataset, params, ws, extract=False)
    assert kills, "the fault was never injected"
    assert state.is_failed()
    msg = state.message or ""
    # the task is retried once (the server may come back); both attempts fail while it is down
    assert f"MLflow tracking server {server.url} became unreachable while " in msg, msg
    assert "connection refused on /api/2.0/mlflow/" in msg, msg
    assert "this attempt created no version of 'mmrec-tiny' and moved no alias" in msg, msg
    assert "Traceback" not in msg

    server.start()  # same port, same PostgreSQL database, same artifact folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)  # `models:/` URIs resolve through the registry URI
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server.url)
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    versions = client.search_model_versions(f"name = '{name}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert client.get_registered_model(name).aliases == {"champion": "1"}  # no alias moved
    for v in versions:  # every registered version has its complete artifacts
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{v.version}",
                dst_path=str(tmp_path / f"v{v.version}"),
                tracking_uri=server.url,
            )
        )
        assert (local / "MLmodel").is_file() and any(local.rglob("model.json")), sorted(local.rglob("*"))

    monkeypatch.setattr(tracking, "log_pyfunc", real_log_pyfunc)
    state = run_training(dataset, params, ws, extract=False)  # the server is back: the run completes
    assert state.is_completed(), state.message
    registry = state.result()["registry"]
    assert registry["version"] == "2" and registry["decision"]["action"] in {"promoted", "refused"}
    exp = client.get_experiment_by_name(name)
    statuses = sorted(r.info.status for r in client.search_runs([exp.experiment_id], "tags.`mmrec.model` = 'itemknn'"))
    assert statuses == ["FAILED", "FINISHED"], statuses  # the interrupted run was closed, not left RUNNING
