"""The Prefect flows against a temporary Prefect API (`prefect_test_harness`) on the tiny fixture.

Real stages, real MLflow (embedded sqlite in the test workspace); feature extraction is replaced
by a recording stub (the real encoders are tested in their own suite) so the fan-out is checked
without loading models. Faults are injected by wrapping `mmrec.stages.STAGE_FUNCTIONS`.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mmrec.stages as stages
from mmrec.errors import StageError, ValidationFailed
from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration

PARAMS = """\
train:
  models: [popularity, itemknn]
split:
  min_user_interactions: 1
"""


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):  # a loaded CI box can be slow to start it
        yield


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def make_workspace(root: Path) -> tuple[str, str, str]:
    root.mkdir(parents=True)
    shutil.copytree(FIXTURES / "tiny", root / "tiny")
    (root / "params.yaml").write_text(PARAMS)
    return str(root / "tiny" / "dataset.yaml"), str(root / "params.yaml"), str(root)


class ExtractStub:
    """Stands in for `mmrec.extract.extract_modality`; records which modalities ran on which thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, spec: Any, paths: Any, modality: str, params: Any = None) -> dict[str, Any]:
        self.calls.append((modality, threading.current_thread().name))
        return {"modality": modality, "encoder": "stub", "encoded": 8}


class StageSpy:
    """Counts calls of the stage functions; optional faults per stage."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, faults: dict[str, list[BaseException]] | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        for name, fn in list(stages.STAGE_FUNCTIONS.items()):
            monkeypatch.setitem(stages.STAGE_FUNCTIONS, name, self._wrap(name, fn))

    def _wrap(self, name: str, fn: Any) -> Any:
        def run(ctx: Any) -> Any:
            self.counts[name] += 1
            if self.faults.get(name):
                raise self.faults[name].pop(0)
            return fn(ctx)

        return run


def read_artifact(key: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return found[0] if found else None


@pytest.fixture(scope="module")
def template(harness: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One full training run into a workspace that no test modifies (tests get copies: `trained`)."""
    from mmrec_flows.training import run_training

    dataset, params, ws = make_workspace(tmp_path_factory.mktemp("flows") / "ws")
    stub = ExtractStub()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setattr("mmrec.extract.extract_modality", stub)
        state = run_training(dataset, params, ws)
    return {"dataset": dataset, "params": params, "ws": ws, "state": state, "stub": stub}


@pytest.fixture
def trained(template: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A fresh copy of the trained workspace per test, so tests that delete or rewrite outputs
    cannot change what the next test sees (the order of the tests does not matter)."""
    assert template["state"].is_completed(), template["state"].message
    src = Path(template["ws"])
    dst = tmp_path / "ws"
    shutil.copytree(src, dst, symlinks=True)  # copy2: file times kept
    _repoint_mlflow(dst / "mlflow.db", src, dst)
    moved = {k: str(dst / Path(template[k]).relative_to(src)) for k in ("dataset", "params")}
    return {**template, **moved, "ws": str(dst)}


def _repoint_mlflow(db: Path, src: Path, dst: Path) -> None:
    """The copied MLflow store names its artifacts by absolute path: point them into the copy."""
    import sqlite3

    old, new = src.resolve().as_posix(), dst.resolve().as_posix()
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for col in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                if "CHAR" in col[2].upper() or "TEXT" in col[2].upper():
                    con.execute(
                        f'UPDATE "{table}" SET "{col[1]}" = replace("{col[1]}", ?, ?) WHERE instr("{col[1]}", ?) > 0',
                        (old, new, old),
                    )


def test_training_pipeline_runs_every_stage_and_registers(template: dict[str, Any]):
    state = template["state"]
    assert state.is_completed(), state.message
    result = state.result()
    from mmrec_flows.training import STAGES

    assert result["stages"] == dict.fromkeys(STAGES, "ok")
    assert sorted(result["extraction"]) == ["image", "text"]  # one task per declared modality
    assert sorted(m for m, _ in template["stub"].calls) == ["image", "text"]
    assert result["registry"]["decision"]["action"] == "promoted"
    assert (Path(template["ws"]) / "mlflow.db").is_file() and Path(result["metrics"]).is_file()
    art = read_artifact("training-tiny")
    assert art is not None and "Registry" in art.data and "popularity" in art.data


def test_rerun_skips_finished_stages_and_redoes_missing_outputs(
    harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mmrec_flows.training import run_training

    # its own workspace (a copy would miss the cache: the paths are part of the cache keys)
    dataset, params, ws = make_workspace(tmp_path / "ws")
    trained = {"dataset": dataset, "params": params, "ws": ws}
    monkeypatch.setattr("mmrec.extract.extract_modality", ExtractStub())
    state = run_training(dataset, params, ws)
    assert state.is_completed(), state.message
    spy = StageSpy(monkeypatch)
    state = run_training(trained["dataset"], trained["params"], trained["ws"])
    assert state.is_completed(), state.message
    # every stage cached; only the live event log is snapshotted again (mmrec_flows/events.py)
    assert dict(spy.counts) == {"ingest_events": 1}
    assert state.result()["registry"]["decision"]["action"] == "unchanged"  # same model: no new version

    (Path(trained["ws"]) / "reports" / "tiny" / "metrics.json").unlink()
    state = run_training(trained["dataset"], trained["params"], trained["ws"])
    assert state.is_completed(), state.message
    assert dict(spy.counts) == {"ingest_events": 2, "evaluate": 1}


def test_nightly_writes_complete_deduplicated_topk(trained: dict[str, Any]):
    from mmrec.models import load_model
    from mmrec_flows.nightly import run_nightly

    state = run_nightly(trained["dataset"], trained["params"], trained["ws"], k=3)
    assert state.is_completed(), state.message
    summary = state.result()
    df = pd.read_parquet(Path(trained["ws"]) / "data" / "tiny" / "recommendations" / "latest.parquet")
    model = load_model(Path(trained["ws"]) / "artifacts" / "tiny" / "models" / summary["model"]["name"])
    assert set(df.user_id) == set(model.user_ids) and summary["users_covered"] == len(model.user_ids)
    assert not df.duplicated(["user_id", "item_id"]).any()
    seen = pd.read_parquet(Path(trained["ws"]) / "data" / "tiny" / "validated" / "interactions.parquet")
    assert not set(zip(df.user_id, df.item_id, strict=True)) & set(zip(seen.user_id, seen.item_id, strict=True))
    for _, ranks in df.groupby("user_id")["rank"]:
        assert list(ranks) == list(range(1, len(ranks) + 1)) and len(ranks) <= 3
    assert summary["model"]["alias"] == "champion"
    art = read_artifact("recommendations-tiny")
    assert art is not None and "catalogue coverage" in art.data


def test_transient_failure_is_retried_then_passes(trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    from mmrec_flows.runners import OrchestrateParams
    from mmrec_flows.training import run_training

    monkeypatch.setattr(
        "mmrec_flows.runners.orchestrate_params", lambda params: OrchestrateParams(retries=2, retry_delay_seconds=0)
    )
    monkeypatch.setattr("mmrec.extract.extract_modality", ExtractStub())
    spy = StageSpy(monkeypatch, {"split": [OSError("disk hiccup")]})
    shutil.rmtree(Path(trained["ws"]) / "data" / "tiny" / "splits")  # forces the split stage to run
    state = run_training(trained["dataset"], trained["params"], trained["ws"], register_best=False)
    assert state.is_completed(), state.message
    assert spy.counts["split"] == 2


def test_deterministic_error_fails_the_run_without_retries(trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    from mmrec_flows.runners import OrchestrateParams
    from mmrec_flows.training import run_training

    monkeypatch.setattr(
        "mmrec_flows.runners.orchestrate_params", lambda params: OrchestrateParams(retries=3, retry_delay_seconds=0)
    )
    spy = StageSpy(
        monkeypatch, {"split": [StageError("splits/temporal/train.tsv unreadable; re-run `mmrec stage split`")]}
    )
    shutil.rmtree(Path(trained["ws"]) / "data" / "tiny" / "splits")
    state = run_training(trained["dataset"], trained["params"], trained["ws"], extract=False)
    assert state.is_failed()
    assert "StageError" in state.message and "re-run `mmrec stage split`" in state.message
    assert spy.counts["split"] == 1 and spy.counts["train"] == 0


def test_validation_failure_fails_with_report_artifact(harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mmrec_flows.training import run_training

    dataset, params, ws = make_workspace(tmp_path / "ws")
    report = Path(ws) / "reports" / "tiny" / "validation.md"

    def failing_validate(ctx: Any) -> Any:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(
            "# Validation: tiny\n\n| table | failed check |\n|---|---|\n| interactions | timestamp range |\n"
        )
        raise ValidationFailed(
            "interactions: 40% of rows quarantined (max 20%)", report_path=str(report.with_suffix(".json"))
        )

    spy = StageSpy(monkeypatch)
    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "validate", failing_validate)
    state = run_training(dataset, params, ws)
    assert state.is_failed()
    assert "validation failed: interactions: 40% of rows quarantined" in state.message
    assert str(report) in state.message and "Traceback" not in state.message
    art = read_artifact("validation-tiny")
    assert art is not None and "timestamp range" in art.data and str(report) in art.data
    assert spy.counts["split"] == 0 and spy.counts["train"] == 0


def test_nightly_without_champion_names_the_command(harness: None, tmp_path: Path):
    from mmrec_flows.nightly import run_nightly

    dataset, params, ws = make_workspace(tmp_path / "ws")
    state = run_nightly(dataset, params, ws)
    assert state.is_failed()
    assert "no registered model 'mmrec-tiny'" in state.message and "mmrec pipeline --dataset" in state.message
    assert not (Path(ws) / "data" / "tiny" / "recommendations" / "latest.parquet").exists()


def test_extraction_fans_out_on_a_local_dask_cluster(trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    from mmrec_flows.runners import OrchestrateParams, make_task_runner
    from mmrec_flows.tasks import run_args
    from mmrec_flows.training import extract_features

    stub = ExtractStub()
    monkeypatch.setattr("mmrec.extract.extract_modality", stub)
    runner = make_task_runner(OrchestrateParams(task_runner="dask", dask_workers=2, dask_processes=False))
    assert type(runner).__name__ == "DaskTaskRunner"
    args = run_args(trained["dataset"], trained["params"], trained["ws"])
    state = extract_features.with_options(task_runner=runner)(["text", "image"], args, return_state=True)
    assert state.is_completed(), state.message
    assert sorted(state.result()) == ["image", "text"]
    assert sorted(m for m, _ in stub.calls) == ["image", "text"]
    assert all(not t.startswith("MainThread") for _, t in stub.calls)  # ran on Dask worker threads
