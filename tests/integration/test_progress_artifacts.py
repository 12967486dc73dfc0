"""Long stages report progress to the Prefect UI: one progress artifact per model (and modality),
at 100% when the run is done (issue 16). Real flow on a temporary Prefect API, tiny fixture."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration

PARAMS = """\
train:
  models: [popularity, bpr]
  params:
    bpr: {dim: 8, max_epochs: 4, batch_size: 16}
split:
  min_user_interactions: 1
evaluate:
  bootstrap_resamples: 20
  ablation: {model: null}
features:
  materialize: false
"""


def test_training_reports_progress_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType
    from prefect.testing.utilities import prefect_test_harness

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copytree(FIXTURES / "tiny", tmp_path / "tiny")
    (tmp_path / "params.yaml").write_text(PARAMS)

    async def progress_artifacts() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"]))
            )

    with prefect_test_harness(server_startup_timeout=300):
        from mmrec_flows.training import run_training

        state = run_training(
            str(tmp_path / "tiny" / "dataset.yaml"),
            str(tmp_path / "params.yaml"),
            str(tmp_path),
            extract=False,
            register_best=False,
        )
        assert state.is_completed(), state.message
        found = asyncio.run(progress_artifacts())
    by_key = {a.description.split(":")[0]: a for a in found}
    assert "train-bpr" in by_key, [a.description for a in found]
    assert by_key["train-bpr"].data == 100 and "done: 4 epochs" in by_key["train-bpr"].description
