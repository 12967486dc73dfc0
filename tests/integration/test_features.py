"""Feast end to end on the tiny fixture: export, apply, materialise, online reads, historical joins.

Every store test runs twice: against the embedded sqlite profile and against the Redis profile
(redis://127.0.0.1:6379; skipped locally without it, a failure in CI). Each test uses its own
Feast project (`mmrec_t<random>`), so Redis keys (which end with the project name) never meet
another run's, and tears the store down afterwards, checking that no key is left behind.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mmrec.config import Params, load_params
from mmrec.data.contract import load_dataset_spec
from mmrec.errors import ConfigError, StageError
from mmrec.stages import StageContext, run_stage
from tests.conftest import FIXTURES, require_service

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
PROFILES = ["sqlite", pytest.param("redis", marks=pytest.mark.services)]
MODEL_INFO = {"model": "bpr", "version": "2"}


def _params(profile: str = "sqlite", project: str | None = None, **features: Any) -> Params:
    return Params.model_validate(
        {
            "extract": {"text": {"encoder": "tiny_text"}, "image": {"encoder": "tiny_cnn"}, "progress": False},
            "split": {"cold_item_fraction": 0.0, "min_user_interactions": 1},
            "train": {"models": ["popularity", "bpr"], "params": {"bpr": {"dim": 4, "max_epochs": 2, "eval_every": 1}}},
            "features": {"profile": profile, "project": project, "redis_url": REDIS_URL, **features},
        }
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny fixture through ingest .. train, plus a nightly top-K from the trained BPR."""
    from mmrec.models import load_model
    from mmrec.recommend.run import run_recommend

    ws = tmp_path_factory.mktemp("features") / "ws"
    shutil.copytree(FIXTURES / "tiny", ws / "tiny")
    ctx = StageContext(spec=load_dataset_spec(ws / "tiny" / "dataset.yaml"), params=_params(), workspace=ws)
    for stage in ("ingest", "validate", "split", "extract_text", "extract_image", "train"):
        run_stage(stage, ctx)
    model = load_model(ctx.paths.model_dir("bpr"))
    run_recommend(ctx, k=3, model=model, model_info={"version": MODEL_INFO["version"]})
    return ws


def _redis_keys(project: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(b"*" + project.encode()))
    finally:
        client.close()


@pytest.fixture(params=PROFILES)
def ctx(request: pytest.FixtureRequest, pipeline: Path, tmp_path: Path) -> Iterator[StageContext]:
    """A private copy of the pipeline's workspace bound to one profile and a fresh project."""
    profile = request.param
    if profile == "redis":
        require_service("Redis", "127.0.0.1", 6379)
    ws = tmp_path / "ws"
    shutil.copytree(pipeline, ws)
    project = f"mmrec_t{uuid.uuid4().hex[:10]}"
    c = StageContext(
        spec=load_dataset_spec(ws / "tiny" / "dataset.yaml"), params=_params(profile, project), workspace=ws
    )
    yield c
    from mmrec.feast.store import feature_store
    from mmrec.params.feast import features_params

    registry = ws / "data" / "tiny" / "feast" / profile / "registry.db"
    if registry.is_file():
        feature_store(c.paths, features_params(c.params)).teardown()
    if profile == "redis":
        assert _redis_keys(project) == [], "teardown left Redis keys behind"


def _bpr(ctx: StageContext):
    from mmrec.models import load_model

    return load_model(ctx.paths.model_dir("bpr"))


def _materialize(ctx: StageContext, versions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from mmrec.feast.export import export_tables
    from mmrec.feast.materialize import materialize
    from mmrec.feast.store import apply

    model = _bpr(ctx)
    exported = export_tables(ctx, model=(model, MODEL_INFO), versions=versions if versions is not None else [])
    return {"export": exported, "apply": apply(ctx), "materialize": materialize(ctx)}


def test_online_reads_match_the_artifacts(ctx: StageContext):
    from mmrec.encoders.store import read_features
    from mmrec.feast.online import OnlineFeatures
    from mmrec.models.item_features import feature_path

    done = _materialize(ctx)
    assert done["apply"]["project"] == ctx.params.features.project
    of = OnlineFeatures.from_context(ctx)
    of.ping()

    recs = pd.read_parquet(ctx.paths.recommendations)
    users = sorted(recs.user_id.unique())
    got = of.recommendations([*users, "nobody"])
    assert got[-1] is None  # unknown user: no precomputed list
    for user, r in zip(users, got, strict=False):
        mine = recs[recs.user_id == user].sort_values("rank")
        assert r is not None and r.item_ids == mine.item_id.tolist()
        assert np.allclose(r.scores, mine.score.to_numpy()) and (r.model, r.model_version) == ("bpr", "2")

    text = read_features(feature_path(ctx.paths, ctx.params.extract, "text"))
    vecs = of.item_embeddings([*text.item_ids, "nothing"], "text")
    assert vecs[-1] is None
    assert all(np.allclose(v, text.matrix[i]) for i, v in enumerate(vecs[:-1]))
    ids, matrix = of.item_embedding_matrix("fused")
    assert sorted(ids) == sorted(text.item_ids) and np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert of.item_embeddings(["i1"], "audio") == [None]  # the tiny dataset has no audio
    assert set(of.views()) == {"text", "image", "fused", "model"}

    model = _bpr(ctx)
    uf = of.user_features([str(model.user_ids[0]), "nobody"])
    assert uf[1] is None and np.allclose(uf[0]["embedding"], model.user_factors[0]) and uf[0]["model_version"] == "2"
    train = pd.read_csv(ctx.paths.split_file("temporal", "train"), sep="\t", dtype={"item_id": str})
    counts = train.item_id.value_counts()
    stats = of.item_stats([*counts.index, "nothing"])
    assert stats[-1] is None
    assert [s["interactions"] for s in stats[:-1]] == counts.tolist()  # popularity = training interactions
    with pytest.raises(ConfigError, match="unknown embedding view"):
        of.item_embeddings(["i1"], "smell")

    # the API's lean reads (mmrec/feast/view_reader.py) answer exactly what Feast's SDK call answers
    probes = {
        "user_recommendations": (
            "user_id",
            [*users, "nobody", users[0]],
            ["item_ids", "scores", "model", "model_version"],
        ),
        "item_text_embedding": ("item_id", [*text.item_ids, "nothing"], ["embedding"]),
        "item_stats": ("item_id", [*counts.index[:3], "nothing"], ["interactions", "days_since_last"]),
    }
    for view, (key, ids, fields) in probes.items():
        sdk = of.get_online_features([f"{view}:{f}" for f in fields], [{key: i} for i in ids])
        assert of.views_reader.read(view, key, ids, fields) == {f: sdk[f] for f in fields}, view
    with pytest.raises(ConfigError, match="keyed by 'user_id', not 'item_id'"):
        of.views_reader.read("user_recommendations", "item_id", ["i1"], ["model"])


def test_incremental_materialisation_loads_only_what_changed(ctx: StageContext):
    from mmrec.feast.export import export_tables
    from mmrec.feast.materialize import materialize
    from mmrec.feast.online import OnlineFeatures

    first = _materialize(ctx)
    assert all(t["changed"] for t in first["export"]["tables"].values())
    again = export_tables(ctx, model=(_bpr(ctx), MODEL_INFO), versions=[])
    assert not any(t["changed"] for t in again["tables"].values())  # same content: same timestamps, no rewrite
    assert (
        again["tables"]["item_stats"]["event_timestamp"] == first["export"]["tables"]["item_stats"]["event_timestamp"]
    )

    # a new nightly run: other lists for every user
    recs = pd.read_parquet(ctx.paths.recommendations)
    recs["item_id"] = recs.groupby("user_id")["item_id"].transform(lambda s: s.iloc[::-1].to_numpy())
    recs.to_parquet(ctx.paths.recommendations, index=False)
    before = OnlineFeatures.from_context(ctx)  # a reader that already served (as the API's): it caches no values
    user = recs.user_id.iloc[0]
    assert before.recommendations([user])[0].item_ids != recs[recs.user_id == user].sort_values("rank").item_id.tolist()
    third = export_tables(ctx, parts=("recommendations",))  # same second as the last end: stamped after it
    assert [t for t, v in third["tables"].items() if v["changed"]] == ["user_recommendations"]
    materialize(ctx)
    for of in (OnlineFeatures.from_context(ctx), before):
        assert of.recommendations([user])[0].item_ids == recs[recs.user_id == user].sort_values("rank").item_id.tolist()


def test_one_feature_service_per_model_version(ctx: StageContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from mmrec.feast.store import apply, feature_store
    from mmrec.params.feast import features_params

    monkeypatch.chdir(tmp_path)  # the repo finds models.json from its own folder, not the working directory

    versions = [
        {"version": "1", "model": "popularity", "aliases": [], "views": ["item_stats", "user_stats"]},
        {
            "version": "2",
            "model": "bpr",
            "aliases": ["champion"],
            "views": ["item_stats", "user_stats", "user_embedding", "item_model_embedding", "user_recommendations"],
        },
    ]
    done = _materialize(ctx, versions)
    assert done["apply"]["services"] == ["model_v1", "model_v2"]
    store = feature_store(ctx.paths, features_params(ctx.params))
    service = store.get_feature_service("model_v2")
    assert {p.name for p in service.feature_view_projections} == set(versions[1]["views"])
    assert service.tags["model"] == "bpr" and service.tags["aliases"] == "champion"
    user = str(_bpr(ctx).user_ids[0])
    rows = [{"user_id": user, "item_id": "i1"}]  # views share field names (embedding, model): full names
    online = store.get_online_features(features=service, entity_rows=rows, full_feature_names=True).to_dict()
    assert online["user_recommendations__item_ids"][0] and online["item_stats__interactions"][0] is not None

    # version 1 deleted from the registry: its service goes at the next apply
    (ctx.paths.data / "feast" / "models.json").write_text(
        json.dumps({"registered_model": "mmrec-tiny", "versions": versions[1:]})
    )
    assert apply(ctx)["deleted"] == ["model_v1"]
    bad = [{"version": "3", "model": "x", "aliases": [], "views": ["no_such_view"]}]
    (ctx.paths.data / "feast" / "models.json").write_text(
        json.dumps({"registered_model": "mmrec-tiny", "versions": bad})
    )
    with pytest.raises(ConfigError, match="no_such_view"):
        apply(ctx)


def test_reading_before_materialising_names_the_command(pipeline: Path, tmp_path: Path):
    from mmrec.feast.online import OnlineFeatures

    with pytest.raises(StageError, match="mmrec stage materialize"):
        OnlineFeatures("tiny", workspace=tmp_path, params=_params().features)


# -- point-in-time correctness --------------------------------------------------------------------


def _multi_day_split(ctx: StageContext, n: int = 300) -> pd.DataFrame:
    """A training split over 20 days with shared timestamps, written where the export reads it."""
    rng = np.random.default_rng(1)
    t0 = 1_600_041_600
    ts = t0 + rng.integers(0, 20 * 86_400, n)
    ts[5::5] = ts[4:-1:5][: len(ts[5::5])]  # same second, different users
    train = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(1, 7, n)],
            "item_id": [f"i{i}" for i in rng.integers(1, 9, n)],
            "timestamp": ts,
        }
    )
    train.loc[n - 1, ["item_id", "timestamp"]] = ["i1", t0 + 25 * 86_400]  # the latest event of all
    folder = ctx.paths.splits("temporal")
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.tsv", sep="\t", index=False)
    for part in ("valid", "test", "cold_test"):
        train.iloc[:0].to_csv(folder / f"{part}.tsv", sep="\t", index=False)
    (folder / "split.json").write_text(json.dumps({"hash": "synthetic"}))
    return train


@pytest.mark.parametrize("stats_from", ["train"])
def test_point_in_time_training_set_has_no_future_information(tmp_path: Path, stats_from: str):
    from mmrec.stages import write_point_in_time_training_set

    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "tiny", ws / "tiny")
    params = _params(project=f"mmrec_t{uuid.uuid4().hex[:10]}", stats_from=stats_from, point_in_time_training=True)
    ctx = StageContext(spec=load_dataset_spec(ws / "tiny" / "dataset.yaml"), params=params, workspace=ws)
    train = _multi_day_split(ctx)

    info = write_point_in_time_training_set(ctx)
    df = pd.read_parquet(info["path"])
    assert len(df) == len(train)  # one row per interaction, shared (key, second) pairs included
    ts = df.event_timestamp.map(lambda t: int(t.timestamp())).to_numpy()
    day_start = ts // 86_400 * 86_400
    for key, view in (("item_id", "item_stats"), ("user_id", "user_stats")):
        for row, (k, t, start) in enumerate(zip(df[key], ts, day_start, strict=True)):
            mine = train.loc[train[key] == k, "timestamp"]
            # exactly what happened before the start of the interaction's day: nothing later leaks
            assert df[f"{view}__interactions"].iloc[row] == int((mine < start).sum()), (key, k, t)
            assert not (df[f"{view}__interactions"].iloc[row] > int((mine < t).sum()))
    # the latest interaction of i1 is not counted in any training row of i1
    assert df.loc[df.item_id == "i1", "item_stats__interactions"].max() == int((train.item_id == "i1").sum()) - 1


# -- configuration ------------------------------------------------------------------------------------


def test_profile_is_a_setting_not_an_edit(tmp_path: Path):
    from mmrec.feast.store import redis_connection_string, store_config
    from mmrec.paths import DatasetPaths

    env = {"MMREC__FEATURES__PROFILE": "redis", "MMREC__FEATURES__REDIS_URL": "redis://10.0.0.5:6380/2"}
    params = load_params(None, environ=env)
    cfg = store_config(DatasetPaths("shop", tmp_path), params.features)
    assert cfg.online_store.type == "redis" and cfg.online_store.connection_string == "10.0.0.5:6380,db=2"
    assert cfg.project == "mmrec_shop" and str(tmp_path / "data" / "shop" / "feast" / "redis") in str(cfg.registry.path)
    sqlite = store_config(DatasetPaths("shop", tmp_path), load_params(None, environ={}).features)
    assert sqlite.online_store.type == "sqlite" and sqlite.online_store.path.startswith(str(tmp_path))
    assert redis_connection_string("rediss://:s3cret@h:1/0") == "h:1,db=0,password=s3cret,ssl=true"
    with pytest.raises(ConfigError, match="redis://"):
        redis_connection_string("http://h:1")
    with pytest.raises(ConfigError, match="no Feast profile 'nope'"):
        store_config(
            DatasetPaths("shop", tmp_path), load_params(None, environ={"MMREC__FEATURES__PROFILE": "nope"}).features
        )
