"""Lost servers become `ServiceUnavailable` with a message that says what to do, fast tier.

- the online store (Redis) going away: Feast's connection errors are translated, the API answers
  503 with Retry-After while it lasts and serves again as soon as reads succeed (same app);
- the MLflow tracking server not answering: `track_training` says which server, at which step,
  and what the registry was left with.
The same faults against real servers: tests/integration/test_production_profile.py.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest

from mmrec.errors import ServiceUnavailable
from tests.conftest import FIXTURES


class FlakyRecs:
    """A precomputed-top-K reader whose store can be switched off (as Feast over a dead Redis)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False

    def check(self) -> None:
        if self.down:
            raise ServiceUnavailable(
                "redis", "127.0.0.1:6379/0", "Feast online store (redis at 127.0.0.1:6379/0) is unreachable"
            )

    def get(self, user_id: str) -> Any:
        self.check()
        return self.inner.get(user_id)


def test_api_answers_503_while_the_online_store_is_down_and_recovers_by_itself(tiny_dataset: Path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmrec.serve.app import create_app
    from mmrec.serve.settings import ServeSettings
    from mmrec.serve.state import StateHolder
    from tests.serving import ListSource, tiny_state

    state = tiny_state(tiny_dataset)
    recs = FlakyRecs(state.recs)
    holder = StateHolder(ListSource([dataclasses.replace(state, recs=recs)]), interval_s=0)
    with TestClient(
        create_app(holder, ServeSettings(log_key="k"), poll=False),
        raise_server_exceptions=False,
        base_url="http://localhost",
    ) as client:
        assert client.get("/users/u1/recommendations?k=3").json()["source"] == "precomputed"
        recs.down = True
        r = client.get("/users/u1/recommendations?k=3")
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json()["error"] == "service_unavailable" and r.json()["service"] == "redis"
        assert "unreachable" in r.json()["detail"]
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")  # not ready while the store is down: a balancer sends traffic elsewhere
        assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
        assert ready.json()["status"] == "not_ready" and "unreachable" in ready.json()["store_error"]
        recs.down = False  # Redis is back: the very next request is served, nothing reloaded
        r = client.get("/users/u1/recommendations?k=3")
        assert r.status_code == 200 and r.json()["source"] == "precomputed"
        assert client.get("/ready").status_code == 200


def test_feast_connection_errors_become_service_unavailable_without_the_password():
    pytest.importorskip("redis")
    from redis.exceptions import BusyLoadingError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError

    from mmrec.feast.online import OnlineFeatures, connection_lost
    from mmrec.params.feast import FeaturesParams

    assert connection_lost(RedisConnectionError("Connection refused"))
    assert connection_lost(BusyLoadingError("Redis is loading the dataset in memory"))  # just restarted
    assert connection_lost(ConnectionRefusedError(111, "refused"))
    assert not connection_lost(ResponseError("WRONGTYPE")) and not connection_lost(KeyError("x"))

    class Store:  # both read paths: Feast's SDK call and the lean per-view reader (mmrec/feast/view_reader.py)
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def get_online_features(self, **_: Any) -> Any:
            raise self.exc

        def read(self, *_: Any) -> Any:
            raise self.exc

    reader = object.__new__(OnlineFeatures)  # no registry needed to test the translation
    reader.store = reader.views_reader = Store(
        RedisConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
    )
    reader.profile = "redis"
    reader.params = FeaturesParams(profile="redis", redis_url="redis://:s3cret@127.0.0.1:6390/2")
    for read in (
        lambda: reader.recommendations(["u1"]),
        lambda: reader.get_online_features(["v:f"], [{"user_id": "u1"}]),
    ):
        with pytest.raises(ServiceUnavailable) as err:
            read()
        assert err.value.service == "redis" and err.value.address == "127.0.0.1:6390/2"
        assert "127.0.0.1:6390/2" in str(err.value) and "s3cret" not in str(err.value)

    reader.store = reader.views_reader = Store(ValueError("a bug, not an outage"))
    for read in (
        lambda: reader.recommendations(["u1"]),
        lambda: reader.get_online_features(["v:f"], [{"user_id": "u1"}]),
    ):
        with pytest.raises(ValueError):  # real errors are not disguised as outages
            read()


@pytest.mark.integration  # MLflow's first REST call imports ~1 300 modules (5-40 s): not for the fast tier
def test_tracking_server_down_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mmrec.config import Params
    from mmrec.data.contract import load_dataset_spec
    from mmrec.params.tracking import TrackingParams
    from mmrec.stages import StageContext
    from mmrec.tracking.runs import track_training

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    uri = f"http://127.0.0.1:{port}"
    ctx = StageContext(spec=load_dataset_spec(FIXTURES / "tiny" / "dataset.yaml"), params=Params(), workspace=tmp_path)
    report = {
        "dataset": "tiny",
        "best_model": "popularity",
        "selection_metric": "recall@20",
        "models": {"popularity": {"valid": {"recall@20": 0.1}, "test": {}}},
    }
    with pytest.raises(ServiceUnavailable) as err:
        track_training(ctx, report, TrackingParams(uri=uri))
    msg = str(err.value)
    assert msg.startswith(
        f"MLflow tracking server {uri} became unreachable while connecting (connection refused on /api/"
    )
    assert "this attempt created no version of 'mmrec-tiny' and moved no alias" in msg and "Re-run" in msg
    assert err.value.service == "mlflow" and err.value.address == uri
    assert not (tmp_path / "mlflow.db").exists()  # no silent fall-back to the embedded store


def test_unreachable_message_is_honest_about_each_step():
    from mmrec.tracking.store import unreachable_error

    exc = Exception(
        "API request to http://h:5000/api/2.0/mlflow/registered-models/alias failed with exception "
        "HTTPConnectionPool(host='h', port=5000): Max retries exceeded (Caused by ReadTimeoutError: Read timed out.)"
    )
    gate = str(unreachable_error("http://h:5000", "mmrec-x", "applying the promotion gate to version 3", exc))
    assert "(timed out on /api/2.0/mlflow/registered-models/alias)" in gate
    assert "the champion alias may not have moved" in gate
    reg = str(unreachable_error("http://h:5000", "mmrec-x", "registering model 'bpr'", exc))
    assert "no alias moved" in reg and "with its complete artifacts" in reg
