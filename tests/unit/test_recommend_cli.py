"""`mmrec recommend` generation options: --strategy, --threshold, --metric, --exclude-items, --candidates.

The champion is stubbed (the registry path is tested in test_tracking_cli.py): these tests are
about how the options reach the scorer, and they stay fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import typer
from typer.testing import CliRunner

from mmrec.cli_lifecycle import register
from mmrec.data.interactions import Interactions
from mmrec.models import create_model
from tests.conftest import FIXTURES

DATASET = str(FIXTURES / "tiny" / "dataset.yaml")
ITEMS = np.array([f"i{i}" for i in range(1, 9)], dtype=object)
USERS = np.array([f"u{i}" for i in range(1, 7)], dtype=object)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((6, 8)) < 0.3).astype(np.float32))
    model = create_model("popularity").fit(Interactions(train, USERS, ITEMS))
    monkeypatch.setattr(
        "mmrec.tracking.registry.load_champion",
        lambda ctx, alias="champion": (model, {"registered_model": "m", "version": "1"}),
    )
    app = typer.Typer()
    register(app)
    return app


def invoke(app: typer.Typer, workspace: Path, *args: str):
    common = ["--dataset", DATASET, "--workspace", str(workspace), "--params", str(workspace / "none.yaml")]
    return CliRunner().invoke(app, [*args, *common])


def test_strategy_and_filters_from_the_command_line(cli: typer.Typer, tmp_path: Path):
    (tmp_path / "ex.txt").write_text("i1\ni2\n")
    (tmp_path / "cand.txt").write_text("i1\ni3\ni4\ni5\n")
    res = invoke(
        cli,
        tmp_path,
        "recommend",
        "--user",
        "u2",
        "--user",
        "stranger",
        "--k",
        "8",
        "--strategy",
        "popularity",
        "--exclude-items",
        str(tmp_path / "ex.txt"),
        "--candidates",
        str(tmp_path / "cand.txt"),
    )
    assert res.exit_code == 0, res.output
    rows = [line.split("\t") for line in res.output.strip().splitlines()[1:]]
    assert rows and {r[1] for r in rows} <= {"i3", "i4", "i5"}
    assert [r[0] for r in rows if r[0] == "stranger"] == ["stranger"] * 3  # the filtered popularity fallback
    res = invoke(
        cli, tmp_path, "recommend", "--k", "5", "--candidates", str(tmp_path / "cand.txt"), "--threshold", "1.5"
    )
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(tmp_path / "data" / "tiny" / "recommendations" / "latest.parquet")
    assert len(df) and set(df.item_id) <= {"i1", "i3", "i4", "i5"} and (df.score >= 1.5).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "magic"], "unknown recommendation strategy 'magic'"),
        (["--metric", "jaccard"], "unknown similarity metric 'jaccard'"),
        (["--strategy", "content"], "needs item features"),
        (["--prefect", "--strategy", "popularity"], "set ['strategy'] there"),
    ],
)
def test_bad_generation_options_are_clear_errors(cli: typer.Typer, tmp_path: Path, args, message):
    res = invoke(cli, tmp_path, "recommend", *args)
    assert res.exit_code == 2 and message in res.output, res.output
