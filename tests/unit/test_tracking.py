"""MLflow tracking and the registry lifecycle on a temporary sqlite store.

Models are tiny popularity/BPR models fitted on inline matrices; the evaluation report is
written by hand so each test controls the validation metric the promotion gate compares.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mmrec.config import Params
from mmrec.data.contract import load_dataset_spec
from mmrec.data.interactions import Interactions
from mmrec.errors import ModelError
from mmrec.models import create_model
from mmrec.params.tracking import TrackingParams
from mmrec.stages import StageContext
from mmrec.tracking.registry import CHALLENGER, CHAMPION, gate, load_champion, promote, registry_state, rollback
from mmrec.tracking.runs import track_training
from mmrec.tracking.store import mlflow_key
from tests.conftest import FIXTURES

USERS = np.array([f"u{i}" for i in range(6)], dtype=object)
ITEMS = np.array([f"i{i}" for i in range(8)], dtype=object)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised MLflow sqlite store (creating the schema takes ~10 s; copying it is instant)."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def ctx(tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch) -> StageContext:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(template_db, ws / "mlflow.db")
    spec = load_dataset_spec(FIXTURES / "tiny" / "dataset.yaml")
    return StageContext(spec=spec, params=Params(), workspace=ws)


def matrix(seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((len(USERS), len(ITEMS))) < 0.4).astype(np.float32)
    dense[:, 0] = 1.0  # every user has at least one item
    return sp.csr_matrix(dense)


def train_and_report(ctx: StageContext, seed: int, recall: float, name: str = "popularity", **hp) -> dict:
    """Fit `name` on a seeded matrix, save it where the pipeline would, return a hand-made report."""
    model = create_model(name, **hp).fit(Interactions(matrix(seed), USERS, ITEMS), matrix(seed + 100) if hp else None)
    model.save(ctx.paths.model_dir(name))
    return {
        "dataset": ctx.spec.name,
        "split": {"kind": "temporal", "hash": f"hash{seed}"},
        "selection_metric": "recall@20",
        "best_model": name,
        "models": {
            name: {
                "valid": {"recall@20": recall, "ndcg@20": recall / 2},
                "test": {"recall@20": recall * 0.9},
                "train_seconds": model.train_seconds,
                "epochs": model.epochs,
                "best_epoch": model.best_epoch,
                "params": model.get_params(),
            }
        },
    }


def test_gate_margin_rules():
    assert gate(0.21, 0.20, 0.0, "absolute")
    assert not gate(0.20, 0.20, 0.0, "absolute")  # a tie is not an improvement
    assert not gate(0.205, 0.20, 0.01, "absolute")
    assert gate(0.211, 0.20, 0.05, "relative")
    assert not gate(0.209, 0.20, 0.05, "relative")
    assert mlflow_key("recall@20") == "recall_at_20"


def test_first_model_is_champion_and_loads_as_pyfunc(ctx: StageContext, monkeypatch: pytest.MonkeyPatch):
    import mlflow.pyfunc

    out = track_training(ctx, train_and_report(ctx, 1, 0.10), TrackingParams())
    assert out["version"] == "1"
    assert out["decision"]["action"] == "promoted"
    assert out["tracking_uri"].startswith("sqlite:///") and (ctx.workspace / "mlflow.db").is_file()
    assert (ctx.workspace / "mlruns").is_dir()  # artifacts stay under the workspace

    model, info = load_champion(ctx)
    assert info["version"] == "1" and info["alias"] == CHAMPION
    assert list(model.item_ids) == list(ITEMS)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", out["tracking_uri"])  # what a consumer elsewhere would set
    pyfunc = mlflow.pyfunc.load_model("models:/mmrec-tiny@champion")
    pred = pyfunc.predict(pd.DataFrame({"user_id": ["u1", "nobody"]}), params={"k": 3})
    assert list(pred.columns) == ["user_id", "item_id", "rank", "score"]
    assert pred.groupby("user_id")["rank"].apply(list).to_dict() == {"u1": [1, 2, 3], "nobody": [1, 2, 3]}
    seen = set(ITEMS[matrix(1)[1].indices])
    assert not seen & set(pred.loc[pred.user_id == "u1", "item_id"])  # u1's training items masked


def test_better_promoted_worse_refused_rollback_restores(ctx: StageContext):
    from mlflow import MlflowClient

    tp = TrackingParams(margin=0.01)
    track_training(ctx, train_and_report(ctx, 1, 0.10), tp)
    better = track_training(ctx, train_and_report(ctx, 2, 0.20), tp)
    assert better["decision"]["action"] == "promoted" and better["decision"]["champion_version"] == "1"
    marginal = track_training(ctx, train_and_report(ctx, 3, 0.205), tp)  # better, but within the margin
    assert marginal["decision"]["action"] == "refused"
    worse = track_training(ctx, train_and_report(ctx, 4, 0.05), tp)
    assert worse["decision"]["action"] == "refused"

    state = registry_state(ctx, tp)
    assert state["aliases"] == {CHAMPION: "2", CHALLENGER: "4"}
    assert [d["action"] for d in state["decisions"]].count("refused") == 2
    client = MlflowClient(tracking_uri=better["tracking_uri"])
    v3 = client.get_model_version("mmrec-tiny", "3")
    assert v3.tags["mmrec.decision.action"] == "refused"
    assert "margin" in v3.tags["mmrec.decision.reason"] and v3.tags["mmrec.decision.champion_version"] == "2"
    assert client.get_run(v3.run_id).data.tags["mmrec.decision.action"] == "refused"  # evidence on the run too

    back = rollback(ctx, tp)
    assert back.action == "rolled_back" and back.version == "1" and back.champion_version == "2"
    assert load_champion(ctx, tp=tp)[1]["version"] == "1"
    with pytest.raises(ModelError, match="no previous champion"):
        rollback(ctx, tp)

    forced = promote(ctx, version="4", force=True, tp=tp)
    assert forced.action == "forced" and registry_state(ctx, tp)["aliases"][CHAMPION] == "4"
    gated = promote(ctx, version="2", tp=tp)  # 0.20 vs 0.05: passes the gate
    assert gated.action == "promoted"


def test_same_model_is_not_registered_twice(ctx: StageContext):
    report = train_and_report(ctx, 1, 0.10)
    first = track_training(ctx, report, TrackingParams())
    again = track_training(ctx, report, TrackingParams())
    assert again["version"] == first["version"] == "1"
    assert again["runs"] == first["runs"]
    assert again["decision"]["action"] == "unchanged"


def test_run_logs_epochs_split_hash_commit_and_reports(ctx: StageContext):
    from mlflow import MlflowClient

    report = train_and_report(ctx, 5, 0.3, name="bpr", dim=4, max_epochs=2, batch_size=16, patience=5)
    ctx.paths.reports.mkdir(parents=True)
    ctx.paths.metrics.write_text("{}")
    out = track_training(ctx, report, TrackingParams())
    client = MlflowClient(tracking_uri=out["tracking_uri"])
    run = client.get_run(out["runs"]["bpr"])
    assert run.data.tags["mmrec.split_hash"] == "hash5"
    assert run.data.params["model.dim"] == "4"
    assert run.data.metrics["valid_recall_at_20"] == pytest.approx(0.3)
    losses = client.get_metric_history(run.info.run_id, "epoch_loss")
    assert [m.step for m in losses] == [1, 2]
    assert len(client.get_metric_history(run.info.run_id, "epoch_valid_recall_at_20")) == 2
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert {"reports/metrics.json", "reports/model_report.json"} <= arts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/learning_curve_bpr.png"]
    if (Path(__file__).resolve().parents[2] / ".git").exists():
        assert len(run.data.tags.get("mmrec.git_commit", "")) == 40


def test_no_champion_names_the_command(ctx: StageContext):
    with pytest.raises(ModelError, match="mmrec pipeline --dataset"):
        load_champion(ctx)
    report = train_and_report(ctx, 1, 0.1)
    track_training(ctx, report, TrackingParams(auto_promote=False))
    with pytest.raises(ModelError, match="mmrec promote"):
        load_champion(ctx)
    assert promote(ctx).action == "promoted"  # the challenger, through the gate


def test_library_imports_neither_prefect_nor_mlflow():
    import subprocess
    import sys

    code = (
        "import sys, mmrec.tracking.runs, mmrec.tracking.registry, mmrec.tracking.pyfunc, mmrec.recommend.run, "
        "mmrec.cli_lifecycle; "
        "print(sorted(m for m in ('prefect', 'mlflow', 'mmrec_flows', 'flows') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
