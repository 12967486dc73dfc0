"""The same tracking/registry code against a real `mlflow server` on loopback.

Backend store: PostgreSQL on 127.0.0.1:5432 (a throw-away database; the server and database come
from `mlflow_pg_server`, tests/integration/servers.py);
artifacts: served by the MLflow server (proxied), so the client never touches the server's disk.
Skipped locally without PostgreSQL; a failure in CI (MMREC_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import FIXTURES
from tests.integration.servers import MlflowServer

pytestmark = [pytest.mark.integration, pytest.mark.services]


def test_registry_lifecycle_against_a_server(
    mlflow_pg_server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mmrec.config import Params
    from mmrec.data.contract import load_dataset_spec
    from mmrec.data.interactions import Interactions
    from mmrec.models import create_model
    from mmrec.params.tracking import TrackingParams
    from mmrec.stages import StageContext
    from mmrec.tracking.registry import load_champion, registry_state, rollback
    from mmrec.tracking.runs import track_training

    mlflow_server = mlflow_pg_server.url  # tests/integration/servers.py: fresh database, server up
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = tmp_path / "ws"
    ctx = StageContext(spec=load_dataset_spec(FIXTURES / "tiny" / "dataset.yaml"), params=Params(), workspace=ws)
    tp = TrackingParams(uri=mlflow_server, margin=0.01)
    users = np.array([f"u{i}" for i in range(1, 7)], dtype=object)
    items = np.array([f"i{i}" for i in range(1, 9)], dtype=object)

    def train(seed: int, recall: float) -> dict:
        m = sp.csr_matrix((np.random.default_rng(seed).random((6, 8)) < 0.5).astype(np.float32))
        create_model("popularity").fit(Interactions(m, users, items)).save(ctx.paths.model_dir("popularity"))
        report = {
            "dataset": "tiny",
            "split": {"kind": "temporal", "hash": f"h{seed}"},
            "selection_metric": "recall@20",
            "best_model": "popularity",
            "models": {"popularity": {"valid": {"recall@20": recall}, "test": {}, "params": {}}},
        }
        return track_training(ctx, report, tp)

    first = train(1, 0.30)
    assert first["tracking_uri"] == mlflow_server and first["decision"]["action"] == "promoted"
    assert train(2, 0.50)["decision"]["action"] == "promoted"
    assert train(3, 0.505)["decision"]["action"] == "refused"  # inside the margin
    assert registry_state(ctx, tp)["aliases"] == {"champion": "2", "challenger": "3"}
    assert rollback(ctx, tp).version == "1"
    model, info = load_champion(ctx, tp=tp)  # artifacts come back through the server
    assert info["version"] == "1" and list(model.item_ids) == list(items)
    assert not (ws / "mlflow.db").exists() and not (ws / "mlruns").exists()  # nothing embedded was used
