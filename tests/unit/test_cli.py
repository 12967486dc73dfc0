"""The `mmrec` command end to end on the tiny fixture, and its error contract."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mmrec.cli import app

runner = CliRunner()

FAST_PARAMS = {
    "split": {"cold_item_fraction": 0.15, "min_user_interactions": 3},
    "validate": {"min_text_chars": 1},
    "train": {
        "models": ["popularity", "itemknn", "bpr", "lightgcn"],
        "params": {"bpr": {"max_epochs": 3, "batch_size": 16}, "lightgcn": {"max_epochs": 3, "batch_size": 16}},
    },
}


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def params_file(tmp_path: Path) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(FAST_PARAMS))
    return p


def test_every_stage_on_tiny_dataset(tiny_dataset: Path, workspace: Path, tmp_path: Path):
    p = params_file(tmp_path)
    for stage in ("ingest", "validate", "split", "train", "evaluate"):
        res = invoke("stage", stage, "--dataset", str(tiny_dataset), "--params", str(p), "--workspace", str(workspace))
        assert res.exit_code == 0, res.output
    assert "lightgcn" in res.output and "recall@20" in res.output  # evaluate prints the table
    metrics = json.loads((workspace / "reports/tiny/metrics.json").read_text())
    assert metrics["dataset"] == "tiny" and metrics["split"]["kind"] == "temporal"
    assert set(metrics["models"]) == {"popularity", "itemknn", "bpr", "lightgcn"}
    for entry in metrics["models"].values():
        assert {"recall@20", "ndcg@10", "map@20", "hit@10", "precision@20", "coverage@20"} <= set(entry["test"])
        assert entry["epochs"] >= 1 and entry["train_seconds"] >= 0
    assert "cold" in metrics["models"]["popularity"]
    for part in ("train", "valid", "test", "cold_test"):
        df = pd.read_csv(workspace / f"data/tiny/splits/temporal/{part}.tsv", sep="\t")
        assert list(df.columns) == ["user_id", "item_id", "timestamp"]
    assert (workspace / "reports/tiny/validation.json").is_file()
    assert (workspace / "reports/tiny/metrics.md").read_text().startswith("# Evaluation: tiny")
    # the report blocks: sparse slice, cold random reference, bootstrap ratios, learning curves
    bpr = metrics["models"]["bpr"]
    assert bpr["sparse"]["max_train_interactions"] == 20 and bpr["sparse"]["users"] <= bpr["test"]["users"]
    assert bpr["history"] and bpr["seconds_per_epoch"] > 0
    expected = metrics["random"]["cold"]["expected"]
    assert expected["recall@20"] == min(20, expected["candidates"]) / expected["candidates"]
    assert "mean_spearman" in bpr["cold_personalisation"] and "recall@20" in bpr["cold_random_lift"]
    ci = metrics["comparisons"]["test"]["bpr"]["recall@20"]
    assert ci["ratio"] is None or ci["low"] <= ci["ratio"] <= ci["high"]
    assert "lightgcn" not in metrics["comparisons"]["test"] and metrics["comparisons"]["reference"] == "lightgcn"
    report = (workspace / "reports/tiny/report.md").read_text()
    assert "## Warm test" in report and "## Against lightgcn" in report
    assert (workspace / "reports/tiny/figures/learning_curves.png").is_file()


def test_single_stage_needs_its_inputs(tiny_dataset: Path, workspace: Path):
    res = invoke("stage", "split", "--dataset", str(tiny_dataset), "--workspace", str(workspace))
    assert res.exit_code == 2
    assert "validated interactions table missing" in res.output and "mmrec stage validate" in res.output


def test_unknown_stage_and_bad_dataset_are_one_line_errors(tiny_dataset: Path, workspace: Path, tmp_path: Path):
    res = invoke("stage", "frobnicate", "--dataset", str(tiny_dataset), "--workspace", str(workspace))
    assert res.exit_code == 2 and "unknown stage 'frobnicate'" in res.output
    res = invoke("stage", "ingest", "--dataset", str(tmp_path / "missing.yaml"))
    assert res.exit_code == 2 and "dataset.yaml not found" in res.output
    assert "Traceback" not in res.output


def test_unknown_model_in_evaluate(tiny_dataset: Path, workspace: Path, tmp_path: Path):
    p = params_file(tmp_path)
    for stage in ("ingest", "validate", "split"):
        assert (
            invoke(
                "stage", stage, "--dataset", str(tiny_dataset), "--params", str(p), "--workspace", str(workspace)
            ).exit_code
            == 0
        )
    res = invoke(
        "evaluate",
        "--dataset",
        str(tiny_dataset),
        "--models",
        "popularty",
        "--params",
        str(p),
        "--workspace",
        str(workspace),
    )
    assert res.exit_code == 2 and "unknown model(s) ['popularty']" in res.output


def test_models_command_lists_baselines():
    res = invoke("models")
    assert res.exit_code == 0
    assert {"popularity", "itemknn", "bpr", "lightgcn"} <= set(res.output.split())


def test_multimodal_models_get_their_features_through_the_stages(tiny_dataset: Path, workspace: Path, tmp_path: Path):
    params = dict(FAST_PARAMS)
    params["extract"] = {"text": {"encoder": "tiny_text"}, "image": {"encoder": "tiny_cnn"}}
    params["train"] = {
        "models": ["content_knn", "vbpr", "two_tower", "mm_graph"],
        "params": {
            "vbpr": {"max_epochs": 3, "batch_size": 16},
            "two_tower": {"max_epochs": 3, "batch_size": 16, "dim": 8, "hidden": 8},
            "mm_graph": {"max_epochs": 3, "batch_size": 16, "dim": 8, "knn_k": 2},
        },
    }
    p = tmp_path / "mm_params.yaml"
    p.write_text(yaml.safe_dump(params))
    for stage in ("ingest", "validate", "split", "extract_text", "extract_image", "train", "evaluate"):
        res = invoke("stage", stage, "--dataset", str(tiny_dataset), "--params", str(p), "--workspace", str(workspace))
        assert res.exit_code == 0, (stage, res.output)
    metrics = json.loads((workspace / "reports/tiny/metrics.json").read_text())
    assert set(metrics["models"]) == {"content_knn", "vbpr", "two_tower", "mm_graph"}
    assert all("cold" in entry for entry in metrics["models"].values())
    common = ["--dataset", str(tiny_dataset), "--params", str(p), "--workspace", str(workspace)]
    res = invoke("explain", *common, "--model", "two_tower", "--user", "u1", "--item", "i3", "--json")
    assert res.exit_code == 0, res.output
    exp = json.loads(res.output)
    assert set(exp["contributions"]) == {"collaborative", "text", "image"}
    assert sum(exp["contributions"].values()) == pytest.approx(exp["score"], abs=1e-4)
    res = invoke("explain", *common, "--model", "mm_graph", "--user", "u1", "--item", "i3")
    assert res.exit_code == 0 and "contributions:" in res.output and "Item 3" in res.output, res.output
    res = runner.invoke(app, ["explain", *common, "--model", "mm_graph", "--user", "nobody", "--item", "i3"])
    assert res.exit_code == 2 and "unknown user id 'nobody'" in res.output
    res = runner.invoke(app, ["explain", *common, "--model", "bpr", "--user", "u1", "--item", "i3"])
    assert res.exit_code == 2 and "no trained 'bpr' model" in res.output


def test_multimodal_model_without_extracted_features_is_a_clear_error(
    tiny_dataset: Path, workspace: Path, tmp_path: Path
):
    params = dict(FAST_PARAMS)
    params["train"] = {"models": ["content_knn"]}
    p = tmp_path / "mm_params.yaml"
    p.write_text(yaml.safe_dump(params))
    for stage in ("ingest", "validate", "split"):
        assert (
            invoke(
                "stage", stage, "--dataset", str(tiny_dataset), "--params", str(p), "--workspace", str(workspace)
            ).exit_code
            == 0
        )
    res = invoke("stage", "train", "--dataset", str(tiny_dataset), "--params", str(p), "--workspace", str(workspace))
    assert res.exit_code == 2 and "mmrec stage extract_" in res.output, res.output
