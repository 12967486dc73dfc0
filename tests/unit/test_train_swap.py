"""`stage train` swaps the models folder as a whole, records provenance, and stale models are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrec.config import Params
from mmrec.data.contract import load_dataset_spec
from mmrec.errors import ModelError
from mmrec.io import clean_interrupted
from mmrec.models.base import Recommender
from mmrec.provenance import ALLOW_SPLIT_MISMATCH_ENV, check_split, current_split_hash
from mmrec.stages import StageContext, run_evaluate, run_stage, run_train

FAST = {
    "split": {"cold_item_fraction": 0.15, "min_user_interactions": 3},
    "train": {"models": ["popularity", "itemknn"]},
    "evaluate": {"ablation": {"model": None}},
}


def _ctx(tiny_dataset: Path, workspace: Path, **over) -> StageContext:
    raw = json.loads(json.dumps(FAST))
    for section, values in over.items():
        raw.setdefault(section, {}).update(values)
    return StageContext(spec=load_dataset_spec(tiny_dataset), params=Params.model_validate(raw), workspace=workspace)


@pytest.fixture
def trained(tiny_dataset: Path, workspace: Path) -> StageContext:
    ctx = _ctx(tiny_dataset, workspace)
    for stage in ("ingest", "validate", "split", "train"):
        run_stage(stage, ctx)
    return ctx


def _files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_model_json_records_split_and_data_hashes(trained: StageContext):
    split = json.loads((trained.paths.splits("temporal") / "split.json").read_text())
    for name in ("popularity", "itemknn"):
        prov = json.loads((trained.paths.model_dir(name) / "model.json").read_text())["provenance"]
        assert prov["split"] == {"kind": "temporal", "hash": split["hash"]}
        assert len(prov["data"]["interactions"]) == 64 and len(prov["data"]["items"]) == 64
        assert prov["features"] == {}  # collaborative models are given no feature file


def test_crash_while_saving_leaves_previous_models_whole(trained: StageContext, monkeypatch):
    before = _files(trained.paths.models)
    calls = []

    def save_then_die(self, path):
        calls.append(self.name)
        if len(calls) == 2:  # the first model is already written (into the temp folder)
            raise KeyboardInterrupt("killed")
        return original(self, path)

    original = Recommender.save
    monkeypatch.setattr(Recommender, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_train(trained)
    assert calls == ["popularity", "itemknn"]
    assert _files(trained.paths.models) == before  # every model and train_summary.json: the old run's
    assert not list(trained.paths.models.parent.glob(".models.*"))


def test_leftovers_of_a_killed_run_are_removed_by_the_next(trained: StageContext):
    models = trained.paths.models
    (models.parent / ".models.abc123.tmp").mkdir()
    (models.parent / ".models.abc123.tmp" / "half.npz").write_bytes(b"x")
    (models / ".itemknn.def456.tmp").mkdir()
    (models / ".train_summary.json.x1.tmp").write_text("{")
    run_train(trained)
    assert not list(models.parent.glob(".models.*")) and not list(models.glob(".*"))
    assert {p.name for p in models.iterdir()} == {"popularity", "itemknn", "train_summary.json"}


def test_kill_between_the_two_renames_restores_previous_folder(tmp_path: Path):
    target = tmp_path / "models"
    old = tmp_path / ".models.old"
    old.mkdir()
    (old / "model.json").write_text("{}")
    (tmp_path / ".models.zz.tmp").mkdir()  # the new one, never renamed in
    removed = clean_interrupted(target)
    assert (target / "model.json").read_text() == "{}" and not old.exists()
    assert [p.name for p in removed] == [".models.zz.tmp"]


def test_training_a_subset_keeps_the_other_models(trained: StageContext):
    before = (trained.paths.model_dir("itemknn") / "model.json").read_bytes()
    run_train(trained, ["popularity"])
    assert (trained.paths.model_dir("itemknn") / "model.json").read_bytes() == before
    summary = json.loads((trained.paths.models / "train_summary.json").read_text())
    assert set(summary["models"]) == {"popularity", "itemknn"}  # a partial run keeps the others


def test_evaluate_refuses_a_model_of_another_split(
    trained: StageContext, tiny_dataset: Path, workspace: Path, monkeypatch
):
    monkeypatch.delenv(ALLOW_SPLIT_MISMATCH_ENV, raising=False)
    other = _ctx(tiny_dataset, workspace, split={"kind": "random"})
    run_stage("split", other)  # another split; the models are from the temporal one
    with pytest.raises(ModelError, match=r"was trained on split [0-9a-f]{12} but the current split is [0-9a-f]{12}"):
        run_evaluate(other)
    monkeypatch.setenv(ALLOW_SPLIT_MISMATCH_ENV, "1")  # the explicit override
    assert set(run_evaluate(other)["models"]) == {"popularity", "itemknn"}


def test_serving_check_compares_with_the_split_on_disk(trained: StageContext, monkeypatch):
    from mmrec.models import load_model

    monkeypatch.delenv(ALLOW_SPLIT_MISMATCH_ENV, raising=False)
    model = load_model(trained.paths.model_dir("popularity"))
    current = current_split_hash(trained.paths, "temporal")
    check_split(model, current, "champion", "retrain")  # same split: fine
    with pytest.raises(ModelError, match=r"champion was trained on split .* Fix: retrain"):
        check_split(model, "f" * 64, "champion", "retrain")
    model.provenance = {}  # a model saved before provenance existed: allowed, with a warning
    check_split(model, "f" * 64, "champion", "retrain")


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from mmrec.models.base import Recommender
from mmrec.stages import run_train
from tests.unit.test_train_swap import _ctx

original, calls = Recommender.save, []

def save(self, path):
    calls.append(self.name)
    if len(calls) == 2:  # the first model is on disk in the temp folder: die like `kill -9`
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, path)

Recommender.save = save
run_train(_ctx(Path(sys.argv[2]), Path(sys.argv[3])))
"""


def test_sigkill_during_save_then_next_run_cleans_up(trained: StageContext, tiny_dataset: Path, workspace: Path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    before = _files(trained.paths.models)
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(repo), str(tiny_dataset), str(workspace)],
        capture_output=True, text=True, timeout=300, cwd=repo, check=False,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert list(trained.paths.models.parent.glob(".models.*.tmp"))  # what the kill left behind
    assert _files(trained.paths.models) == before  # the previous run's models, whole
    run_train(trained)
    assert not list(trained.paths.models.parent.glob(".models.*"))
    assert {p.name for p in trained.paths.models.iterdir()} == {"popularity", "itemknn", "train_summary.json"}
