"""`mmrec serve`'s real backends on the tiny fixture: MLflow champion, Feast online store, item indexes.

Runs twice, against the embedded sqlite online store and the Redis profile (redis://127.0.0.1:6379;
skipped locally without Redis, a failure in CI). Checks that the API answers from the store
(the precomputed lists equal the nightly file), and that promoting a new champion is picked up
by a reload while requests keep succeeding.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mmrec.config import Params
from mmrec.data.contract import load_dataset_spec
from mmrec.stages import StageContext, run_stage
from tests.conftest import FIXTURES, require_service

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
PROFILES = ["sqlite", pytest.param("redis", marks=pytest.mark.services)]


def _params(models: list[str], profile: str = "sqlite", project: str | None = None) -> Params:
    return Params.model_validate(
        {
            "extract": {"text": {"encoder": "tiny_text"}, "image": {"encoder": "tiny_cnn"}, "progress": False},
            "split": {"cold_item_fraction": 0.0, "min_user_interactions": 1},
            "train": {"models": models, "params": {"bpr": {"dim": 4, "max_epochs": 2, "eval_every": 1}}},
            "features": {"profile": profile, "project": project, "redis_url": REDIS_URL},
            "recommend": {"k": 3},
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny fixture through ingest .. evaluate, item-KNN registered as the champion (v1)."""
    from mmrec.tracking.runs import track_training

    ws = tmp_path_factory.mktemp("serve") / "ws"
    shutil.copytree(FIXTURES / "tiny", ws / "tiny")
    ctx = StageContext(spec=load_dataset_spec(ws / "tiny" / "dataset.yaml"), params=_params(["itemknn"]), workspace=ws)
    for stage in ("ingest", "validate", "split", "extract_text", "extract_image", "train", "evaluate"):
        run_stage(stage, ctx)
    decision = track_training(ctx)["decision"]
    assert decision["action"] == "promoted"
    return ws


@pytest.fixture(params=PROFILES)
def ctx(request: pytest.FixtureRequest, trained: Path, tmp_path: Path) -> Iterator[StageContext]:
    """A private copy of the trained workspace, nightly top-K written and materialised in one profile."""
    from mmrec.feast.materialize import run_materialize
    from mmrec.feast.store import feature_store
    from mmrec.params.feast import features_params
    from mmrec.recommend.run import run_recommend

    profile = request.param
    if profile == "redis":
        require_service("Redis", "127.0.0.1", 6379)
    ws = tmp_path / "ws"
    shutil.copytree(trained, ws)
    project = f"mmrec_s{uuid.uuid4().hex[:10]}"
    c = StageContext(
        spec=load_dataset_spec(ws / "tiny" / "dataset.yaml"),
        params=_params(["itemknn"], profile, project),
        workspace=ws,
    )
    run_recommend(c)
    run_materialize(c)
    yield c
    registry = ws / "data" / "tiny" / "feast" / profile / "registry.db"
    if registry.is_file():
        feature_store(c.paths, features_params(c.params)).teardown()


def _client(ctx: StageContext) -> Any:
    from fastapi.testclient import TestClient

    from mmrec.serve.run import build_app
    from mmrec.serve.settings import ServeSettings

    return TestClient(
        build_app(ctx, settings=ServeSettings(log_key="k", reload_interval_s=0)), base_url="http://localhost"
    )


@pytest.mark.parametrize("ctx", PROFILES, indirect=True)
def test_endpoints_answer_from_the_online_store(ctx: StageContext):
    nightly = pd.read_parquet(ctx.paths.recommendations)
    with _client(ctx) as c:
        ready = c.get("/ready").json()
        assert ready["status"] == "ready" and ready["version"] == "1" and ready["model"] == "itemknn"
        assert ready["online_store"] == ctx.params.features.profile
        assert {"text", "image", "fused"} <= set(ready["modalities"])
        for user in sorted(nightly.user_id.unique()):
            body = c.get(f"/users/{user}/recommendations?k=3").json()
            mine = nightly[nightly.user_id == user].sort_values("rank")
            assert body["source"] == "precomputed", body
            assert [i["item_id"] for i in body["items"]] == mine.item_id.tolist()
        assert c.get("/users/nobody/recommendations").status_code == 404
        for modality in ("text", "image", "fused"):
            r = c.get(f"/items/i1/similar?k=3&modality={modality}")
            assert r.status_code == 200 and r.json()["items"], (modality, r.text)
        r = c.post("/recommendations", json={"item_ids": ["i1", "i2"], "k": 3})
        assert r.status_code == 200 and r.json()["items"]
        user = nightly.user_id.iloc[0]
        item = nightly.item_id.iloc[0]
        r = c.get(f"/users/{user}/recommendations/{item}/explain")
        assert r.status_code == 200 and r.json()["item_id"] == item
        img = c.get("/media/items/i1/image")
        assert img.status_code == 200 and img.content[:4] == b"\x89PNG"


@pytest.mark.parametrize("ctx", ["sqlite"], indirect=True)
def test_a_promoted_champion_is_served_after_reload_without_failed_requests(ctx: StageContext):
    from mmrec.tracking.registry import promote
    from mmrec.tracking.runs import track_training

    with _client(ctx) as c:
        assert c.get("/ready").json()["version"] == "1"
        # a second model version, registered and forced to champion while requests run
        c2 = StageContext(spec=ctx.spec, params=_params(["popularity"]), workspace=ctx.workspace)
        run_stage("train", c2)
        run_stage("evaluate", c2)
        version = track_training(c2)["version"]
        assert version == "2"
        promote(c2, version="2", force=True)

        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                statuses.append(c.get("/users/u1/recommendations?k=3").status_code)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            result = c.post("/admin/reload", json={}).json()
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert result["action"] == "loaded" and result["version"] == "2" and result["previous"] == "1"
        ready = c.get("/ready").json()
        assert ready["version"] == "2" and ready["model"] == "popularity"
        assert statuses and set(statuses) == {200}
        assert c.post("/admin/reload", json={}).json()["action"] == "unchanged"
