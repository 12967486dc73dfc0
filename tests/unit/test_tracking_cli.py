"""`mmrec promote / rollback / registry / recommend` (mmrec.cli_lifecycle) on a temporary sqlite store."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mmrec.cli_lifecycle import register, ui_hints
from mmrec.params.tracking import TrackingParams
from mmrec.stages import StageContext
from mmrec.tracking.runs import track_training
from tests.conftest import FIXTURES
from tests.unit.test_tracking import ctx, template_db, train_and_report  # noqa: F401 - fixtures

DATASET = str(FIXTURES / "tiny" / "dataset.yaml")


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def invoke(app: typer.Typer, ctx: StageContext, *args: str):
    common = ["--dataset", DATASET, "--workspace", str(ctx.workspace), "--params", str(ctx.workspace / "none.yaml")]
    return CliRunner().invoke(app, [*args, *common])


def test_promote_rollback_registry(cli: typer.Typer, ctx: StageContext):
    tp = TrackingParams(auto_promote=False)
    track_training(ctx, train_and_report(ctx, 1, 0.10), tp)
    res = invoke(cli, ctx, "promote")
    assert res.exit_code == 0, res.output
    assert "v1: promoted" in res.output
    track_training(ctx, train_and_report(ctx, 2, 0.05), tp)
    res = invoke(cli, ctx, "promote")  # worse than the champion: refused, exit status 1
    assert res.exit_code == 1 and "v2: refused" in res.output
    res = invoke(cli, ctx, "promote", "--version", "2", "--force")
    assert res.exit_code == 0 and "forced" in res.output
    res = invoke(cli, ctx, "rollback")
    assert res.exit_code == 0 and "champion is v1 again" in res.output
    res = invoke(cli, ctx, "registry")
    assert res.exit_code == 0 and "'champion': '1'" in res.output and "rolled_back" in res.output


def test_recommend_for_users_and_all(cli: typer.Typer, ctx: StageContext, tmp_path: Path):
    track_training(ctx, train_and_report(ctx, 1, 0.10), TrackingParams())
    users = tmp_path / "users.txt"
    users.write_text("u1\nnobody\n")
    res = invoke(cli, ctx, "recommend", "--users", str(users), "--k", "2")
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0] == "user_id\titem_id\trank\tscore" and len(lines) == 5
    res = invoke(cli, ctx, "recommend", "--k", "2")
    assert res.exit_code == 0, res.output
    assert "recommendations for 6/6 users" in res.output and ctx.paths.recommendations.is_file()


def test_recommend_without_champion_names_the_command(cli: typer.Typer, ctx: StageContext):
    res = invoke(cli, ctx, "recommend")
    assert res.exit_code == 2
    assert "mmrec pipeline --dataset" in res.output


def test_ui_hints():
    assert "mlflow ui --backend-store-uri sqlite:///x/mlflow.db" in ui_hints("sqlite:///x/mlflow.db")[0]
    assert ui_hints("http://127.0.0.1:5000")[0] == "MLflow UI: http://127.0.0.1:5000"


def test_recommend_single_user_option(cli: typer.Typer, ctx: StageContext):
    track_training(ctx, train_and_report(ctx, 1, 0.10), TrackingParams())
    res = invoke(cli, ctx, "recommend", "--user", "u2", "--k", "3")
    assert res.exit_code == 0, res.output
    rows = [line.split("\t") for line in res.output.strip().splitlines()[1:]]
    assert [r[0] for r in rows] == ["u2"] * 3 and [r[2] for r in rows] == ["1", "2", "3"]
