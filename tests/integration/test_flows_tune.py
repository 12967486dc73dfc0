"""`mmrec pipeline --tune`: the training flow runs the bounded search before training and trains
with the chosen values (temporary Prefect API, tiny fixture, extraction stubbed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.test_flows import ExtractStub, harness, make_workspace  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def test_pipeline_tunes_before_training(harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mmrec_flows.training import run_training

    dataset, params, ws = make_workspace(tmp_path / "ws")
    Path(params).write_text(
        yaml.safe_dump(
            {
                "train": {"models": ["popularity", "itemknn"]},
                "split": {"min_user_interactions": 1},
                "tune": {"track": False},
                "features": {"materialize": False},
            }
        )
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("mmrec.extract.extract_modality", ExtractStub())
    state = run_training(dataset, params, ws, register_best=False, tune=True, tune_trials=2)
    assert state.is_completed(), state.message
    result = state.result()
    tuning = result["tuning"]
    assert tuning["models"]["itemknn"]["trials"]["run"] == 2 and "popularity" not in tuning["models"]
    overlay = yaml.safe_load((Path(ws) / "params/tiny.yaml").read_text())
    chosen = overlay["train"]["params"]["itemknn"]
    summary = json.loads((Path(ws) / "artifacts/tiny/models/train_summary.json").read_text())
    assert summary["models"]["itemknn"]["params"]["k"] == chosen["k"]
    assert str((Path(ws) / "params/tiny.yaml").resolve()) in summary["params_files"]
