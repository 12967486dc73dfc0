"""A new user's first hour on their own text+image catalogue (issue 16): modalities the dataset
has, per-dataset parameter files, partial evaluations, the pre-flight check, media templates,
duplicate rows, quiet CLI defaults and what /ready reports."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mmrec.cli import QUIET_ENV_DEFAULTS, app, set_env_defaults
from mmrec.config import load_run_params
from mmrec.data.contract import load_dataset_spec, template_media_paths
from mmrec.errors import ConfigError
from mmrec.models import available_models
from mmrec.models.modalities import (
    ModalityAvailability,
    resolve_model_params,
    wanted_modalities,
)
from mmrec.models.registry import get_model_class

runner = CliRunner()

#: every registered model that reads modality features: the intersection must hold for each
MULTIMODAL = [
    n
    for n in available_models()
    if "modalities" in get_model_class(n).param_names() or get_model_class(n).required_modalities
]

TINY_MODEL_PARAMS = {
    "bpr": {"dim": 8, "max_epochs": 3, "batch_size": 64},
    "content_knn": {"modalities": ["text", "image", "audio", "video"]},
    "vbpr": {
        "modalities": ["text", "image", "audio", "video"],
        "dim": 8,
        "content_dim": 8,
        "max_epochs": 3,
        "batch_size": 64,
    },
    "two_tower": {
        "modalities": ["text", "image", "audio", "video"],
        "dim": 8,
        "hidden": 8,
        "input_dim": 8,
        "max_epochs": 3,
        "batch_size": 64,
    },
    "mm_graph": {
        "modalities": ["text", "image", "audio", "video"],
        "dim": 8,
        "knn_k": 3,
        "max_epochs": 3,
        "batch_size": 64,
    },
}


def make_catalogue(
    root: Path,
    n_users: int = 24,
    n_items: int = 30,
    images: bool = True,
    template: bool = False,
    repeats: int = 0,
    seed: int = 0,
) -> Path:
    """A shop catalogue with text and (optionally) images, no audio or video; returns dataset.yaml.

    Every 5th item has no image file (missing media, not an error).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    items = []
    for i in range(n_items):
        iid = f"sku{i:03d}"
        colour = ("red", "blue", "green")[i % 3]
        row = {"sku": iid, "name": f"Product {i}", "descr": f"A {colour} thing for group {i % 4}."}
        if images and i % 5:
            arr = np.full((16, 16, 3), (60 * (i % 3), 40 * (i % 4), 10 * (i % 7)), np.uint8)
            Image.fromarray(arr).save(root / "images" / f"{iid}.png")
            row["img"] = f"images/{iid}.png"
        else:
            row["img"] = ""
        items.append(row)
    pd.DataFrame(items).to_csv(root / "products.csv", index=False)
    rows = []
    for u in range(n_users):
        group = u % 4
        liked = [i for i in range(n_items) if i % 4 == group] + list(rng.choice(n_items, 3, replace=False))
        for j, i in enumerate(liked):
            rows.append({"customer": f"c{u:02d}", "sku": f"sku{i:03d}", "t": 1_600_000_000 + 1000 * u + 10 * j})
    rows += rows[:repeats]  # identical rows: quantities in a purchase log
    pd.DataFrame(rows).to_csv(root / "events.csv", index=False)
    media: dict = {}
    if images:
        media = {"image": {"template": "images/{item_id}.png"}} if template else {"image": "img"}
    spec = {
        "name": "shop",
        "interactions": {"path": "events.csv", "columns": {"user_id": "customer", "item_id": "sku", "timestamp": "t"}},
        "items": {
            "path": "products.csv",
            "columns": {"item_id": "sku"},
            "text_fields": {"name": "name", "description": "descr"},
            "media": media,
        },
    }
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root / "dataset.yaml"


def write_params(tmp_path: Path, models: list[str], **extra) -> Path:
    p = tmp_path / "params.yaml"
    raw = {
        "split": {"min_user_interactions": 3},
        "extract": {
            "device": "cpu",
            "progress": False,
            "workers": 1,
            "text": {"encoder": "tiny_text"},
            "image": {"encoder": "tiny_cnn"},
        },
        "train": {"models": models, "params": {m: TINY_MODEL_PARAMS[m] for m in models if m in TINY_MODEL_PARAMS}},
        "evaluate": {"bootstrap_resamples": 20, "ablation": {"model": None}},
        **extra,
    }
    p.write_text(yaml.safe_dump(raw))
    return p


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def run_stages(spec: Path, params: Path, ws: Path, *stages: str) -> None:
    for stage in stages:
        res = invoke("stage", stage, "--dataset", str(spec), "--params", str(params), "--workspace", str(ws))
        assert res.exit_code == 0, f"{stage}: {res.output}"


# ---- 1. modalities: what the model asks for, intersected with what the dataset has -------------


def test_every_multimodal_model_is_covered():
    assert {"content_knn", "vbpr", "two_tower", "mm_graph"} <= set(MULTIMODAL)
    assert set(MULTIMODAL) <= set(TINY_MODEL_PARAMS)  # a new multimodal model must be added to the tests


@pytest.mark.parametrize("name", MULTIMODAL)
def test_resolve_keeps_only_what_the_dataset_has(name: str):
    available = ModalityAvailability(
        "shop",
        ("text", "image"),
        ("text", "image"),
        {"audio": "dataset 'shop' declares no audio", "video": "dataset 'shop' declares no video"},
    )
    params = {"modalities": ["text", "image", "audio", "video"], "weights": {"text": 1.0, "audio": 2.0}}
    if "weights" not in get_model_class(name).param_names():
        params.pop("weights")
    out, dropped = resolve_model_params(name, params, available)
    assert out["modalities"] == ["text", "image"]
    assert set(dropped) == {"audio", "video"} and "declares no audio" in dropped["audio"]
    if "weights" in out:
        assert out["weights"] == {"text": 1.0}
    # the class default (no `modalities` in params) is intersected too
    assert resolve_model_params(name, {}, available)[0]["modalities"] == [
        m for m in wanted_modalities(name, {}) if m in ("text", "image")
    ]


@pytest.mark.parametrize("name", MULTIMODAL)
def test_resolve_errors_only_when_nothing_is_left_and_names_the_fix(name: str):
    text_only = ModalityAvailability("shop", ("text",), ("text",), {})
    out, dropped = resolve_model_params(name, {"modalities": ["text", "image"]}, text_only)
    assert out["modalities"] == ["text"] and set(dropped) == {"image"}
    nothing = ModalityAvailability("logs", (), (), {})
    with pytest.raises(ConfigError) as err:
        resolve_model_params(name, {"modalities": ["audio"]}, nothing)
    msg = str(err.value)
    assert f"train.params.{name}.modalities" in msg and "train.models" in msg and "dataset.yaml" in msg


def test_collaborative_models_need_no_modalities():
    nothing = ModalityAvailability("logs", (), (), {})
    for name in ("popularity", "itemknn", "bpr", "lightgcn"):
        assert resolve_model_params(name, {"dim": 8} if name == "bpr" else {}, nothing)[1] == {}


def test_train_on_a_text_and_image_catalogue_uses_text_and_image(tmp_path: Path, caplog, one_torch_thread):
    spec = make_catalogue(tmp_path / "raw")
    params = write_params(tmp_path, ["popularity", "bpr", *MULTIMODAL])
    ws = tmp_path / "ws"
    run_stages(spec, params, ws, "ingest", "validate", "split", "extract_text", "extract_image")
    with caplog.at_level(logging.INFO):
        run_stages(spec, params, ws, "extract_audio", "extract_video", "train", "evaluate")
    assert not list((ws / "data/shop/features/audio").glob("*.parquet"))  # undeclared: no empty feature file
    assert "declares no audio" in json.loads((ws / "reports/shop/extraction.json").read_text())["skipped"]["audio"]
    summary = json.loads((ws / "artifacts/shop/models/train_summary.json").read_text())
    for name in MULTIMODAL:
        assert summary["models"][name]["params"]["modalities"] == ["text", "image"], name
        line = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{name}: using")]
        assert len(line) == 1 and "dropped audio" in line[0] and "video (" in line[0], line
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    metrics = json.loads((ws / "reports/shop/metrics.json").read_text())
    assert set(MULTIMODAL) <= set(metrics["models"])


def test_train_on_a_text_only_catalogue_and_on_one_without_content(tmp_path: Path, one_torch_thread):
    spec = make_catalogue(tmp_path / "raw", images=False)
    params = write_params(tmp_path, ["vbpr", "content_knn"])
    ws = tmp_path / "ws"
    run_stages(spec, params, ws, "ingest", "validate", "split", "extract_text", "extract_image", "train")
    summary = json.loads((ws / "artifacts/shop/models/train_summary.json").read_text())
    assert summary["models"]["vbpr"]["params"]["modalities"] == ["text"]
    # no content at all: one clear error naming the fix
    raw = yaml.safe_load(spec.read_text())
    raw["items"].pop("text_fields")
    spec.write_text(yaml.safe_dump(raw))
    ws2 = tmp_path / "ws2"
    run_stages(spec, params, ws2, "ingest", "validate", "split")
    res = invoke("stage", "train", "--dataset", str(spec), "--params", str(params), "--workspace", str(ws2))
    assert res.exit_code == 2
    assert "train.params.vbpr.modalities" in res.output and "declares no text" in res.output


def test_declared_modality_not_extracted_yet_says_to_extract(tmp_path: Path):
    spec = make_catalogue(tmp_path / "raw")
    params = write_params(tmp_path, ["content_knn"])
    ws = tmp_path / "ws"
    run_stages(spec, params, ws, "ingest", "validate", "split", "extract_text")
    res = invoke("stage", "train", "--dataset", str(spec), "--params", str(params), "--workspace", str(ws))
    assert res.exit_code == 2 and "mmrec stage extract_image" in res.output


# ---- 4. per-dataset parameter files -----------------------------------------------------------


def test_dataset_params_overlay_and_tuned_file_precedence(tmp_path: Path):
    spec_path = make_catalogue(tmp_path / "raw")
    base = write_params(tmp_path, ["bpr"])
    spec = load_dataset_spec(spec_path)
    ws = tmp_path / "ws"
    p, files = load_run_params(base, spec, ws, environ={})
    assert files == [str(base.resolve())] and p.train.params["bpr"]["max_epochs"] == 3
    (spec_path.parent / "params.yaml").write_text("train: {params: {bpr: {lr: 0.5}}}\n")
    p, files = load_run_params(base, spec, ws, environ={})
    assert p.train.params["bpr"] == {**TINY_MODEL_PARAMS["bpr"], "lr": 0.5}  # merged key by key
    assert files == [str(base.resolve()), str((spec_path.parent / "params.yaml").resolve())]
    (ws / "params").mkdir(parents=True)
    (ws / "params" / "shop.yaml").write_text("train: {params: {bpr: {lr: 0.25}}}\n")
    p, files = load_run_params(base, spec, ws, environ={})
    assert p.train.params["bpr"]["lr"] == 0.25 and files[-1].endswith("params/shop.yaml")
    p, _ = load_run_params(base, spec, ws, environ={"MMREC__TRAIN__MODELS": "[popularity]"})
    assert p.train.models == ["popularity"]  # the environment wins over every file
    (ws / "params" / "shop.yaml").write_text("train: {parms: {}}\n")
    with pytest.raises(ConfigError, match=r"shop\.yaml"):
        load_run_params(base, spec, ws, environ={})


def test_the_shipped_ml100k_params_file_is_valid_and_text_image():
    repo = Path(__file__).resolve().parents[2]
    raw = yaml.safe_load((repo / "examples/ml100k-mm/params.yaml").read_text())
    from mmrec.config import Params, deep_merge

    base = yaml.safe_load((repo / "params.yaml").read_text())
    merged = Params.model_validate(deep_merge(base, raw))
    for name in ("content_knn", "vbpr", "two_tower", "mm_graph"):
        assert merged.train.params[name]["modalities"] == ["text", "image"]


# ---- 3. partial evaluation merges into the report ---------------------------------------------


def test_evaluate_models_subset_merges_into_the_report(tmp_path: Path):
    spec = make_catalogue(tmp_path / "raw", images=False)
    params = write_params(
        tmp_path, ["popularity", "itemknn", "bpr"], evaluate={"reference": "popularity", "bootstrap_resamples": 20}
    )
    ws = tmp_path / "ws"
    run_stages(spec, params, ws, "ingest", "validate", "split")
    common = ["--dataset", str(spec), "--params", str(params), "--workspace", str(ws)]
    assert invoke("evaluate", *common).exit_code == 0
    first = json.loads((ws / "reports/shop/metrics.json").read_text())
    assert set(first["models"]) == {"popularity", "itemknn", "bpr"} and len(first["runs"]) == 1
    res = invoke("evaluate", *common, "--models", "bpr")
    assert res.exit_code == 0, res.output
    assert "merged into the existing report: bpr from this run; itemknn, popularity kept" in res.output
    second = json.loads((ws / "reports/shop/metrics.json").read_text())
    assert set(second["models"]) == {"popularity", "itemknn", "bpr"}  # nothing silently dropped
    assert second["models"]["popularity"] == first["models"]["popularity"]  # kept row, with its run
    assert second["models"]["bpr"]["run"]["id"] != first["models"]["bpr"]["run"]["id"]
    assert {r["id"] for r in second["runs"]} == {first["run"]["id"], second["run"]["id"]}
    assert second["models"]["bpr"]["run"]["split_hash"] == second["split"]["hash"]
    # bpr's ratio to the reference came from a run without the reference: not carried over
    assert "bpr" not in second["comparisons"].get("test", {}) and "itemknn" in second["comparisons"]["test"]
    assert "## Runs" in (ws / "reports/shop/report.md").read_text()
    summary = json.loads((ws / "artifacts/shop/models/train_summary.json").read_text())
    assert set(summary["models"]) == {"popularity", "itemknn", "bpr"}


def test_merge_drops_rows_of_another_split():
    from mmrec.stages import merge_partial_report

    row = {"valid": {"recall@20": 0.1}, "run": {"id": "a", "at": "t", "split_hash": "OLD"}}
    old = {"split": {"hash": "OLD"}, "models": {"x": row}, "comparisons": {"reference": "x"}, "runs": [row["run"]]}
    new = {
        "split": {"hash": "NEW"},
        "selection_metric": "recall@20",
        "comparisons": {"reference": "x", "skipped": "..."},
        "models": {"y": {"valid": {"recall@20": 0.2}, "run": {"id": "b", "at": "t", "split_hash": "NEW"}}},
        "run": {"id": "b", "at": "t", "split_hash": "NEW", "models": ["y"]},
    }
    merged = merge_partial_report(old, new)
    assert set(merged["models"]) == {"y"} and "x" in merged["dropped"] and merged["best_model"] == "y"
    # a report written before rows recorded their run: kept (same split), listed as an earlier run
    legacy = {
        "split": {"hash": "NEW"},
        "models": {"x": {"valid": {"recall@20": 0.3}}, "y": {"valid": {"recall@20": 0.0}}},
        "comparisons": {"reference": "x"},
    }
    merged = merge_partial_report(legacy, new)
    assert list(merged["models"]) == ["x", "y"] and merged["best_model"] == "x"
    assert [r["id"] for r in merged["runs"]] == ["earlier", "b"] and merged["runs"][0]["models"] == ["x"]


# ---- 8. possibly truncated training is flagged ------------------------------------------------


def test_truncation_flags():
    from types import SimpleNamespace

    from mmrec.stages import truncation_flag

    def model(best, epochs, max_epochs, every=5):
        hist = [{"epoch": e, "valid_recall@20": 0.1} for e in range(every, epochs + 1, every)]
        return SimpleNamespace(history=hist, best_epoch=best, epochs=epochs, max_epochs=max_epochs, name="m")

    assert "first validation check" in truncation_flag(model(5, 20, 100))
    assert "max_epochs" in truncation_flag(model(40, 40, 40))
    assert truncation_flag(model(15, 30, 100)) is None


# ---- 5. data check ------------------------------------------------------------------------------


def test_data_check_says_what_a_run_would_do(tmp_path: Path):
    spec = make_catalogue(tmp_path / "raw", template=True)
    params = write_params(tmp_path, ["popularity", "bpr", "vbpr"])
    res = runner.invoke(
        app,
        [
            "data",
            "check",
            "--dataset",
            str(spec),
            "--params",
            str(params),
            "--workspace",
            str(tmp_path / "ws"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{") :])
    assert report["tables"]["interactions"]["rows"] > 0 and report["items"]["total"] == 30
    assert report["items"]["modalities"]["text"]["items"] == 30
    image = report["items"]["modalities"]["image"]
    assert image["items"] == 24 and image["files_missing"] == 6  # every 5th item has no file
    assert (
        report["models"]["vbpr"]["modalities"] == ["text", "image"] and "audio" in report["models"]["vbpr"]["dropped"]
    )
    assert report["estimates"]["extraction"]["image"]["items"] == 24
    assert report["estimates"]["training"]["bpr"]["seconds"] is not None and not report["problems"]
    text = runner.invoke(app, ["data", "check", "--dataset", str(spec), "--params", str(params)]).output
    assert "models that would run" in text and "vbpr" in text and "no problems found" in text


def test_data_check_names_a_wrong_column(tmp_path: Path):
    spec = make_catalogue(tmp_path / "raw")
    raw = yaml.safe_load(spec.read_text())
    raw["interactions"]["columns"]["timestamp"] = "time"
    spec.write_text(yaml.safe_dump(raw))
    res = runner.invoke(
        app, ["data", "check", "--dataset", str(spec), "--params", str(write_params(tmp_path, ["bpr"]))]
    )
    assert res.exit_code == 1 and "'time'" in res.output and "columns.timestamp" in res.output


# ---- 6. media templates -------------------------------------------------------------------------


def test_media_template_paths_stay_inside_the_root(tmp_path: Path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"x")
    # "../secret" -> images/../secret.jpg stays inside the root (no file there: missing)
    ids = ["a", "b", "../../secret", "../secret", "x/../../../secret", "a\x00", None]
    paths, counts = template_media_paths(ids, "images/{item_id}.jpg", root)
    assert paths == ["images/a.jpg", None, None, None, None, None, None]
    assert counts == {"found": 1, "missing": 2, "unsafe": 3}


def test_media_template_in_dataset_yaml_is_checked(tmp_path: Path):
    spec = make_catalogue(tmp_path / "raw", template=True)
    raw = yaml.safe_load(spec.read_text())
    for bad in ("images/{sku}.png", "images/{}.png", "/abs/{item_id}.png", "images/{item_id.png"):
        raw["items"]["media"]["image"] = {"template": bad}
        spec.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match="template"):
            load_dataset_spec(spec)


def test_media_template_through_ingest_and_validation(tmp_path: Path):
    spec = make_catalogue(tmp_path / "raw", template=True)
    params = write_params(tmp_path, ["popularity"])
    ws = tmp_path / "ws"
    run_stages(spec, params, ws, "ingest", "validate")
    items = pd.read_parquet(ws / "data/shop/validated/items.parquet")
    assert (
        items["image"].notna().sum() == 24
        and items.loc[items["item_id"] == "sku001", "image"].item() == "images/sku001.png"
    )
    report = json.loads((ws / "reports/shop/validation.json").read_text())
    assert report["tables"]["items"]["quarantined"] == 0 and report["media"]["failed"] == 0


# ---- 7. duplicate rows are data -----------------------------------------------------------------


@pytest.mark.parametrize("policy", ["aggregate", "drop"])
def test_duplicate_rows_follow_the_policy_outside_the_quarantine(tmp_path: Path, policy: str):
    spec = make_catalogue(tmp_path / "raw", images=False, repeats=60)  # ~25% of rows are repeats
    raw = yaml.safe_load(spec.read_text())
    raw["interactions"]["duplicates"] = policy
    spec.write_text(yaml.safe_dump(raw))
    params = write_params(tmp_path, ["popularity"])
    ws = tmp_path / "ws"
    run_stages(spec, params, ws, "ingest", "validate")
    t = json.loads((ws / "reports/shop/validation.json").read_text())["tables"]["interactions"]
    assert t["deduplicated"] == 60 and t["quarantined"] == 0
    assert t["valid_rows"] + t["quarantined"] + t["deduplicated"] == t["rows"]
    inter = pd.read_parquet(ws / "data/shop/validated/interactions.parquet")
    assert len(inter) == t["valid_rows"]
    if policy == "aggregate":
        assert inter["count"].sum() == t["rows"] and inter["weight"].max() == 2.0
    else:
        assert "count" not in inter.columns
    assert "| deduplicated |" in (ws / "reports/shop/validation.md").read_text()


def test_unknown_duplicate_policy_is_a_config_error(tmp_path: Path):
    spec = make_catalogue(tmp_path / "raw", images=False)
    raw = yaml.safe_load(spec.read_text())
    raw["interactions"]["duplicates"] = "sum"
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="duplicates"):
        load_dataset_spec(spec)


# ---- 2. the CLI's own quiet defaults -------------------------------------------------------------


def test_cli_sets_quiet_defaults_that_the_environment_overrides():
    env = {"HF_HUB_OFFLINE": "0"}
    set_env_defaults(env)
    assert env["HF_HUB_OFFLINE"] == "0"  # the user's choice wins
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DO_NOT_TRACK"] == "1" and env["GX_ANALYTICS_ENABLED"] == "false" and env["DVC_NO_ANALYTICS"] == "1"
    assert set(QUIET_ENV_DEFAULTS) <= set(env)


def test_cli_applies_the_defaults_before_a_command_runs(monkeypatch):
    for key in QUIET_ENV_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    assert invoke("models").exit_code == 0
    assert all(os.environ.get(k) == v for k, v in QUIET_ENV_DEFAULTS.items())


# ---- 9. /ready says what is served -----------------------------------------------------------


def test_ready_reports_precomputed_only_when_a_nightly_list_exists(tmp_path: Path):
    import dataclasses

    pytest.importorskip("fastapi")
    from mmrec.serve.loader import OnlineRecs
    from tests.conftest import FIXTURES
    from tests.serving import tiny_state

    state = tiny_state(FIXTURES / "tiny" / "dataset.yaml")
    table = tmp_path / "user_recommendations.parquet"
    recs = OnlineRecs(online=None, table=table)
    st = dataclasses.replace(state, recs=recs)
    assert st.describe()["precomputed"] is False and st.describe()["serving"] == "model"  # no table yet
    pd.DataFrame({"user_id": []}).to_parquet(table)
    assert st.describe()["precomputed"] is False  # materialised before any nightly run: empty
    pd.DataFrame({"user_id": ["u1"]}).to_parquet(table)
    assert st.describe()["precomputed"] is True and st.describe()["serving"] == "precomputed"
    assert dataclasses.replace(state, recs=None).describe()["precomputed"] is False


# ---- 10. progress ------------------------------------------------------------------------------


def test_progress_hook_and_rate_line():
    from mmrec.progress import Rate, format_duration, progress_hook, report

    seen = []
    report("x", 1, 2)  # no hook: nothing happens
    with progress_hook(lambda *a: seen.append(a)):
        report("x", 1, 2, "half")
    with progress_hook(lambda *a: 1 / 0):
        report("x", 1, 2)  # a failing hook never stops the work
    assert seen == [("x", 1, 2, "half")]
    assert format_duration(3725) == "1h02m" and format_duration(65) == "1m05s" and format_duration(4) == "4s"
    line = Rate(100).line(10)
    assert line.startswith("10/100 items (10%)") and "items/s" in line and "ETA" in line


def test_prefect_progress_artifacts_are_created_then_updated(monkeypatch):
    pytest.importorskip("prefect")
    from prefect import artifacts

    from mmrec_flows.tasks import PrefectProgress

    calls = []
    monkeypatch.setattr(artifacts, "create_progress_artifact", lambda pct, **kw: calls.append(("create", pct)) or "id1")
    monkeypatch.setattr(
        artifacts, "update_progress_artifact", lambda aid, pct, **kw: calls.append(("update", aid, pct))
    )
    hook = PrefectProgress(min_interval=3600)
    hook("extract-image", 0, 200, "starting")
    hook("extract-image", 50, 200, "25%")  # throttled
    hook("extract-image", 200, 200, "done")  # the end is always shown
    assert calls == [("create", 0.0), ("update", "id1", 100.0)]
